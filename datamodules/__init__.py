"""LightningDataModules that hold whole image data sets in memory as uint8 tensors."""

from datamodules.base import InMemoryDataModule, TensorBatches
from datamodules.cifar10 import CIFAR10
from datamodules.errors import DataError
from datamodules.mnist import MNIST, FashionMNIST, MNISTSubset

__all__ = ["CIFAR10", "DataError", "FashionMNIST", "InMemoryDataModule", "MNIST", "MNISTSubset", "TensorBatches"]
