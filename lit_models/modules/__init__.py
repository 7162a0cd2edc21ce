"""LightningModules: what a training, validation and test step does, and what is logged (`train/loss`, `val/acc`)."""

from lit_models.modules.classifier import Classifier
from lit_models.modules.optimization import OptimizedModule, make_optimizer
from lit_models.modules.scratch_mlp import ScratchMLP
from lit_models.modules.triplet import TripletEncoder

__all__ = ["Classifier", "OptimizedModule", "ScratchMLP", "TripletEncoder", "make_optimizer"]
