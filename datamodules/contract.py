"""What every litlab data module provides: the one contract models and callbacks rely on.

`InMemoryDataModule` (datamodules/base.py) implements all of it; a data module of your own either subclasses it
(implement `_load`) or provides these members itself. Callbacks and modules never probe a data module for a
member: they ask `require(trainer, who, *members)`, which names what is missing and who needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import lightning as L
from torch import Tensor

from datamodules.errors import DataError


@runtime_checkable
class LitlabData(Protocol):
    """The members of a litlab data module (beyond LightningDataModule's loaders)."""

    num_classes: int  # linked to model.init_args.num_classes by the CLI
    input_shape: tuple[int, int, int]  # (C, H, W) of one image; linked to model.init_args.input_shape
    class_names: Sequence[str]  # one per class, in label order (figure labels, per-class metrics)
    eval_batch_size: int  # batch size for evaluation passes (validation, test, analysis callbacks)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 pixels [N, C, H, W] -> float32 [N, C, H, W] as the model sees them: the only place mean/std
        are applied on the way in."""

    def denormalize(self, x: Tensor) -> Tensor:
        """Model inputs [N, C, H, W] -> pixel values in [0, 1] (unclamped): the only way back."""

    def split_tensors(self, split: str = "test", limit: int | None = None) -> tuple[Tensor, Tensor]:
        """A whole split ("train", "val", "test"), or its first `limit` examples, as normalised float32
        [N, C, H, W] and int64 [N] labels."""

    def train_class_counts(self) -> Tensor:
        """int64 [num_classes] label counts of the training split as trained on."""

    def class_counts(self, split: str) -> Tensor:
        """int64 [num_classes] label counts of a split ("train" as trained on, "val", "test")."""


MEMBERS = ("num_classes", "input_shape", "class_names", "eval_batch_size", "normalize", "denormalize",
           "split_tensors", "train_class_counts", "class_counts")


class DataContractError(DataError):
    """A data module lacks a member of `LitlabData` that a callback or module needs."""


def require(trainer: L.Trainer, who: object, *members: str) -> LitlabData:
    """The trainer's data module, checked to provide `members` (names from `LitlabData`) for `who` (a callback
    or module, named in the error)."""
    name = who if isinstance(who, str) else type(who).__name__
    dm = trainer.datamodule
    if dm is None:
        raise DataContractError(f"{name} needs a litlab data module; pass `datamodule=` to trainer.fit/test "
                                "instead of bare dataloaders.")
    missing = [m for m in members if not hasattr(dm, m)]  # the one place a data module is inspected
    if missing:
        raise DataContractError(
            f"{name} needs the data module to provide {', '.join(f'`{m}`' for m in missing)}; "
            f"{type(dm).__name__} does not. Add {'it' if len(missing) == 1 else 'them'} (see datamodules.LitlabData) "
            f"or subclass datamodules.InMemoryDataModule, or leave {name} out of the run.")
    return dm
