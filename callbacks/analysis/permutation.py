"""PermutationImportance: how much accuracy each image patch carries, found by shuffling it across examples."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from callbacks.analysis.figures import save_figure, save_table
from callbacks.analysis.testset import display_images, evaluating, split_predictions


def permutation_importance(
    model: nn.Module, x: Tensor, y: Tensor, patch_size: int, seed: int = 0, repeats: int = 1,
    batch_size: int = 10000,
) -> tuple[float, Tensor]:
    """Accuracy on `x` [N, C, H, W] as it is, and with each patch shuffled across examples: [rows, cols].

    For patch (r, c) every example gets that patch (all channels) from another example (a seeded permutation
    of the N examples, a new one per patch and repeat); the rest of the image is its own. Copies of `x` for
    several patches go through the model together, `batch_size` images at a time.
    """
    n, _, h, w = x.shape
    p = patch_size
    rows, cols = math.ceil(h / p), math.ceil(w / p)
    patches = [(r, c) for r in range(rows) for c in range(cols)]
    gen = torch.Generator().manual_seed(seed)
    per_chunk = max(1, batch_size // n)  # patches whose permuted copies share one pass

    def predict(images: Tensor) -> Tensor:
        return torch.cat([model(b).argmax(-1) for b in images.split(batch_size)])

    acc = torch.zeros(len(patches), device=x.device)
    with evaluating(model), torch.inference_mode():
        base = float((predict(x) == y).float().mean())
        for _ in range(repeats):
            for start in range(0, len(patches), per_chunk):
                chunk = patches[start : start + per_chunk]
                copies = x.repeat(len(chunk), 1, 1, 1)  # [len(chunk) * N, C, H, W]
                for k, (r, c) in enumerate(chunk):
                    perm = torch.randperm(n, generator=gen).to(x.device)
                    rs, cs = slice(r * p, (r + 1) * p), slice(c * p, (c + 1) * p)
                    copies[k * n : (k + 1) * n, :, rs, cs] = x[perm, :, rs, cs]
                correct = (predict(copies).view(len(chunk), n) == y).float()
                acc[start : start + len(chunk)] += correct.mean(1)
    return base, (acc / repeats).view(rows, cols).cpu()


class PermutationImportance(L.Callback):
    """Accuracy drop when each `patch_size`² patch is shuffled across test examples, as a heat map.

    Writes `figures/permutation_importance.png` (mean input beside a heat map of the drop over the image, in
    percentage points) and its CSV twin (patch row/column, pixel position, accuracy, drop).
    """

    def __init__(
        self,
        patch_size: int = 4,
        max_examples: int | None = 2000,
        repeats: int = 1,
        split: Literal["train", "val", "test"] = "test",
        seed: int = 0,
        batch_size: int = 10000,
    ) -> None:
        """
        Args:
            patch_size: Side of the square patches in pixels (4 gives 7x7 patches on 28x28 images).
            max_examples: Use a seeded subset of this many examples (None: the whole split).
            repeats: Average over this many permutations per patch (more: less noise, proportionally slower).
            split: Which split to measure on.
            seed: Seed of the subset and of the permutations.
            batch_size: Images per forward pass.
        """
        if patch_size < 1 or repeats < 1 or batch_size < 1:
            raise ValueError(f"patch_size, repeats and batch_size must be >= 1, got {patch_size}, {repeats}, "
                             f"{batch_size}.")
        self.patch_size, self.max_examples, self.repeats = patch_size, max_examples, repeats
        self.split, self.seed, self.batch_size = split, seed, batch_size

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        pred = split_predictions(trainer, pl_module, self.split, self.max_examples, self.seed, self)
        _, _, h, w = pred.x.shape
        if self.patch_size > min(h, w):
            raise ValueError(f"patch_size={self.patch_size} is larger than the {h}x{w} images; choose a smaller one.")
        base, acc = permutation_importance(pl_module, pred.x, pred.y, self.patch_size, self.seed, self.repeats,
                                           self.batch_size)
        drop = 100 * (base - acc.numpy())  # percentage points, [rows, cols]
        p = self.patch_size
        save_table(trainer, "permutation_importance", ["row", "col", "y0", "x0", "accuracy", "drop_pp"],
                   [[r, c, r * p, c * p, round(float(acc[r, c]), 6), round(float(drop[r, c]), 4)]
                    for r in range(acc.shape[0]) for c in range(acc.shape[1])])
        mean_image = display_images(trainer, pred.x, self).mean(0)
        fig, (ax_img, ax) = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
        ax_img.imshow(mean_image, cmap="gray" if mean_image.ndim == 2 else None, vmin=0, vmax=1)
        ax_img.set_title(f"mean {self.split} image (for orientation)", fontsize=10)
        ys, xs = np.minimum(np.arange(acc.shape[0] + 1) * p, h), np.minimum(np.arange(acc.shape[1] + 1) * p, w)
        vmax = float(np.abs(drop).max()) or 1.0  # symmetric: blue cells (accuracy went up) are noise
        mesh = ax.pcolormesh(xs, ys, drop, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_aspect("equal")
        if drop.size <= 100:  # few enough cells to print each value legibly
            for r in range(drop.shape[0]):
                for c in range(drop.shape[1]):
                    ax.text((xs[c] + xs[c + 1]) / 2, (ys[r] + ys[r + 1]) / 2, f"{drop[r, c]:.1f}", ha="center",
                            va="center", fontsize=7, color="white" if abs(drop[r, c]) > 0.6 * vmax else "black")
        fig.colorbar(mesh, ax=ax, label="accuracy drop (percentage points)")
        for a in (ax_img, ax):
            a.set_xlabel("x (pixels)")
            a.set_ylabel("y (pixels)")
        ax.set_title(f"accuracy drop when a {p}x{p} patch is shuffled across examples", fontsize=10)
        title = (f"Permutation importance on {len(pred.y)} {self.split} examples (accuracy {base:.2%}; "
                 f"{self.repeats} permutation(s) per patch)")
        fig.suptitle(title, fontsize=11)
        save_figure(trainer, fig, "permutation_importance", title)
