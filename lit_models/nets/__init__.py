"""Plain `nn.Module` nets: no Lightning, each built from `(input_shape, num_classes, ...)` (see `Net`)."""

from lit_models.nets.cnn import BNCNN, LeNet5
from lit_models.nets.efficientnet import EfficientNetLite0
from lit_models.nets.fast_cnn import DataInitializedNet, FastCNN
from lit_models.nets.linear import LogisticRegression, SoftmaxRegression
from lit_models.nets.mlp import ACTIVATIONS, MLP, Net
from lit_models.nets.scratch_net import ScratchNet
from lit_models.nets.transfer import EncoderClassifierNet, ResNet18

__all__ = ["ACTIVATIONS", "BNCNN", "DataInitializedNet", "EfficientNetLite0", "EncoderClassifierNet", "FastCNN", "LeNet5",
           "LogisticRegression", "MLP", "Net", "ResNet18", "ScratchNet", "SoftmaxRegression"]
