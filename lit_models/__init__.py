"""Models, one role per sub-package: `modules/` the LightningModules (training logic, metrics, logging), `nets/` the
plain `nn.Module`s they train, `losses/` per-example loss weighting and triplet mining. Configs name classes by
the short paths exported here (`lit_models.MLP`, `lit_models.Classifier`, `lit_models.losses.Focal`).
"""

from lit_models.modules import Classifier, OptimizedModule, ScratchMLP, TripletEncoder, make_optimizer
from lit_models.nets import (BNCNN, MLP, EfficientNetLite0, EncoderClassifierNet, FastCNN, LeNet5, LogisticRegression,
                             ResNet18, ScratchNet, SoftmaxRegression)

__all__ = ["BNCNN", "Classifier", "EfficientNetLite0", "EncoderClassifierNet", "FastCNN", "LeNet5", "LogisticRegression",
           "MLP", "OptimizedModule", "ResNet18", "ScratchMLP", "ScratchNet", "SoftmaxRegression", "TripletEncoder",
           "make_optimizer"]
