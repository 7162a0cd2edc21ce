"""The data-module contract (datamodules.LitlabData): every shipped data module provides it, and a user's data
module that lacks a member gets one error naming the member and the callback that needs it."""

from __future__ import annotations

import inspect

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import MisclassifiedGallery
from datamodules import CIFAR10, MNIST, DataContractError, FashionMNIST, InMemoryDataModule, LitlabData, MNISTSubset
from datamodules.contract import MEMBERS


@pytest.mark.parametrize("cls", [MNIST, FashionMNIST, CIFAR10, MNISTSubset])
def test_shipped_data_modules_satisfy_the_contract(cls, tmp_path):
    dm = cls(data_dir=str(tmp_path), download=False) if cls is not MNISTSubset else cls()
    assert isinstance(dm, LitlabData)  # runtime_checkable: every member present (nothing loaded yet)
    assert len(dm.class_names) == dm.num_classes == 10
    assert dm.input_shape == ((3, 32, 32) if cls is CIFAR10 else (1, 28, 28))


def test_protocol_lists_every_member_it_declares():
    declared = {name for name in vars(LitlabData) if not name.startswith("_")} | set(LitlabData.__annotations__)
    assert declared == set(MEMBERS)


def test_shared_constructor_arguments_are_declared_once():
    base = inspect.signature(InMemoryDataModule.__init__).parameters
    for cls in (CIFAR10, MNISTSubset):
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        # Only what differs: the data set's own arguments and changed defaults, never a copy of the rest.
        assert own <= {"data_dir", "augment", "crop_padding", "val_size", "download"}, own
        assert {"batch_size", "seed", "classes"} <= set(base)


def test_normalize_is_what_training_and_analysis_see():
    dm = MNISTSubset(val_size=100)
    dm.setup()
    u8, _ = dm._splits["test"]  # uint8 [N, 1, 28, 28]
    x, _ = dm.split_tensors("test")
    batch, _ = next(iter(dm.test_dataloader()))
    assert torch.equal(x, dm.normalize(u8)) and torch.equal(batch, x[: len(batch)])
    assert abs(float(x.mean()) - 0.0) < 0.1 and abs(float(x.std()) - 1.0) < 0.1  # MNIST's own mean/std
    pixels = dm.denormalize(x)
    assert torch.allclose(pixels * 255, u8.float(), atol=1e-3)  # the inverse, back to the stored bytes


class NoClassNames(L.LightningDataModule):
    """A user's data module: everything MisclassifiedGallery reads except `class_names`."""

    eval_batch_size, num_classes, input_shape = 8, 3, (1, 2, 2)

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(24, 1, 2, 2, generator=g), torch.randint(0, 3, (24,), generator=g)

    def split_tensors(self, split: str = "test"):
        return self.x, self.y

    def test_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.eval_batch_size)


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.net(x)

    def test_step(self, batch, batch_idx):
        return None


def test_a_missing_member_is_one_error_naming_it_and_the_callback(tmp_path):
    trainer = L.Trainer(default_root_dir=tmp_path, callbacks=[MisclassifiedGallery(k=2)], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.raises(DataContractError) as err:
        trainer.test(Tiny(), datamodule=NoClassNames())
    message = str(err.value)
    assert "MisclassifiedGallery" in message and "`class_names`" in message and "NoClassNames" in message
    assert "split_tensors" not in message  # only what is missing is named
    assert not list(tmp_path.rglob("*.png"))  # failed before writing a figure
