"""LightningModules (training logic) and the plain nets they train."""

from lit_models.classifier import Classifier
from lit_models.nets import MLP
from lit_models.scratch_mlp import ScratchMLP
from lit_models.scratch_net import ScratchNet

__all__ = ["Classifier", "MLP", "ScratchMLP", "ScratchNet"]
