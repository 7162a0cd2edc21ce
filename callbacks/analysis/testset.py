"""What the test-set analysis callbacks share: the split and the model's predictions on it, gradients despite
Lightning's inference mode, and images a person can look at.

Every analysis callback reads the whole split from `trainer.datamodule.split_tensors(split)` (decoded once,
already on the device) and the model from `pl_module`; none re-reads files or stores anything on the module.
What a callback reads of the data module goes through `datamodules.require` (the `LitlabData` contract), so a
data module that lacks it fails naming the member and the callback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from datamodules.contract import require

# Named in the error when a data module lacks what is read; callbacks pass themselves as `who`.
WHO = "an analysis callback"


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; every submodule's own train/eval flag restored after it."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def gradients() -> Iterator[None]:
    """Autograd on, even inside `trainer.test` (which runs its hooks under `torch.inference_mode()`).

    Tensors made under inference mode cannot enter autograd: clone inputs inside this block before use.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def subsample(n: int, max_n: int | None, seed: int) -> Tensor:
    """Sorted positions of a seeded subset of `max_n` out of `n` (all of them when max_n is None or >= n)."""
    if max_n is None or max_n >= n:
        return torch.arange(n)
    if max_n < 1:
        raise ValueError(f"Need at least one example to analyse, got max {max_n}.")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_n].sort().values


def predict_probs(module: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Softmax of `module(x)` in eval mode, in batches: float [N, num_classes]."""
    with evaluating(module), torch.inference_mode():
        return torch.cat([module(b).softmax(-1) for b in x.split(batch_size)])


@dataclass
class Predictions:
    """A (sub)set of a split with the model's predictions; `index` holds positions in the whole split."""

    x: Tensor  # float32 [N, C, H, W], normalised as the model sees it
    y: Tensor  # int64 [N]
    probs: Tensor  # float32 [N, num_classes]
    index: Tensor  # int64 [N]

    @property
    def preds(self) -> Tensor:
        return self.probs.argmax(-1)

    @property
    def confidence(self) -> Tensor:
        """Probability of the predicted class, [N]."""
        return self.probs.max(-1).values

    @property
    def correct(self) -> Tensor:
        return self.preds == self.y


def split_predictions(
    trainer: L.Trainer, pl_module: nn.Module, split: str = "test", max_examples: int | None = None, seed: int = 0,
    who: object = WHO,
) -> Predictions:
    """The split (or a seeded subset of it) with `pl_module`'s predictions."""
    dm = require(trainer, who, "split_tensors", "eval_batch_size")
    x, y = dm.split_tensors(split)
    index = subsample(len(y), max_examples, seed).to(y.device)
    x, y = x[index], y[index]
    return Predictions(x, y, predict_probs(pl_module, x, dm.eval_batch_size), index)


def class_names(trainer: L.Trainer, num_classes: int, who: object = WHO) -> list[str]:
    """The data module's class names; their indices when it names a different number of classes (e.g. a
    one-logit model's two classes of a data module that lists more)."""
    names = list(require(trainer, who, "class_names").class_names)
    return names if len(names) == num_classes else [str(k) for k in range(num_classes)]


def display_images(trainer: L.Trainer, x: Tensor, who: object = WHO) -> np.ndarray:
    """Normalised [N, C, H, W] back to pixel values in [0, 1]: [N, H, W] (grey) or [N, H, W, 3] (colour)."""
    pixels = require(trainer, who, "denormalize").denormalize(x).clamp(0, 1).detach().cpu()
    return pixels[:, 0].numpy() if x.shape[1] == 1 else pixels.permute(0, 2, 3, 1).numpy()


def black_image(trainer: L.Trainer, shape: Sequence[int], device: torch.device, who: object = WHO) -> Tensor:
    """The all-black image as the model sees it, (0 - mean) / std per channel: [1, C, H, W]."""
    return require(trainer, who, "normalize").normalize(torch.zeros(1, *shape, dtype=torch.uint8, device=device))


def grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols
