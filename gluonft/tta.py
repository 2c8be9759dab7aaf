"""`gluonft.tta`: test-time augmentation, which lives in `gluonft.predict` with the rest of
prediction; this module keeps the names it was first published under."""
from .predict import (VIEW_NAMES, VIEW_SETS, evaluate_tta, predict_proba_tta,  # noqa: F401
                      tta_views)

__all__ = ["predict_proba_tta", "evaluate_tta", "tta_views", "VIEW_NAMES", "VIEW_SETS"]
