"""gluonft: fine-tune GluonCV model-zoo backbones with a new output layer."""
__version__ = "0.1.0"
