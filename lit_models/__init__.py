"""LightningModules (training logic) and the plain nets they train."""

from lit_models.classifier import Classifier
from lit_models.cnn import BNCNN, LeNet5
from lit_models.efficientnet import EfficientNetLite0
from lit_models.linear import LogisticRegression, SoftmaxRegression
from lit_models.nets import MLP
from lit_models.scratch_mlp import ScratchMLP
from lit_models.scratch_net import ScratchNet
from lit_models.triplet import TripletEncoder

__all__ = ["BNCNN", "Classifier", "EfficientNetLite0", "LeNet5", "LogisticRegression", "MLP", "ScratchMLP", "ScratchNet",
           "SoftmaxRegression", "TripletEncoder"]
