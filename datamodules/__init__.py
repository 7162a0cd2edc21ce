"""LightningDataModules that hold whole image data sets in memory as uint8 tensors."""

from datamodules.base import InMemoryDataModule, TensorBatches
from datamodules.mnist import MNIST, DataError, FashionMNIST, MNISTSubset

__all__ = ["DataError", "FashionMNIST", "InMemoryDataModule", "MNIST", "MNISTSubset", "TensorBatches"]
