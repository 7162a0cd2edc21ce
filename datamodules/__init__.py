"""LightningDataModules that hold whole image data sets in memory as uint8 tensors.

`LitlabData` (datamodules/contract.py) is what every litlab data module provides; `InMemoryDataModule` implements it.
"""

from datamodules.base import InMemoryDataModule, Normalization, TensorBatches
from datamodules.cifar10 import CIFAR10
from datamodules.contract import DataContractError, LitlabData, require
from datamodules.errors import DataError
from datamodules.mnist import MNIST, FashionMNIST, MNISTSubset

__all__ = ["CIFAR10", "DataContractError", "DataError", "FashionMNIST", "InMemoryDataModule", "LitlabData", "MNIST",
           "MNISTSubset", "Normalization", "TensorBatches", "require"]
