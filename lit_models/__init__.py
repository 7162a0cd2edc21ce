"""LightningModules (training logic) and the plain nets they train."""

from lit_models.classifier import Classifier
from lit_models.nets import MLP

__all__ = ["Classifier", "MLP"]
