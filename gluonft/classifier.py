"""`gluonft.classifier`: the names first published here, which now live where their concept
does: training recipes in `gluonft.recipes`, prediction in `gluonft.predict`, the backbones
`model="auto"` picks from in `gluonft.backbones`."""
from .backbones import CANDIDATES, Candidate, model_params, pick_backbone  # noqa: F401
from .predict import (Ensemble, _members, classify, ensemble, evaluate_folder,  # noqa: F401
                      predict_bytes, predict_files, predict_images)
from .recipes import (DEFAULT_IMAGE_SIZE, FAST_IMAGE_SIZE, fine_tune, lr_find,  # noqa: F401
                      train_classifier)

__all__ = ["train_classifier", "classify", "predict_files", "predict_images", "ensemble",
           "Ensemble", "fine_tune", "lr_find", "CANDIDATES", "Candidate", "model_params",
           "pick_backbone", "FAST_IMAGE_SIZE", "DEFAULT_IMAGE_SIZE", "predict_bytes",
           "evaluate_folder"]
