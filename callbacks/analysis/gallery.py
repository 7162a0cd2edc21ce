"""MisclassifiedGallery: the test examples the model gets wrong with the highest confidence."""

from __future__ import annotations

from typing import Literal

import lightning as L
import matplotlib.pyplot as plt
from torch import Tensor

from callbacks.analysis.figures import save_figure, save_table
from callbacks.analysis.testset import Predictions, class_names, display_images, grid_shape, split_predictions


def most_confident_wrong(pred: Predictions, k: int) -> Tensor:
    """Positions (into `pred`) of the `k` wrong predictions with the highest confidence, most confident first."""
    wrong = (~pred.correct).nonzero().squeeze(1)
    order = pred.confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order[:k]]


class MisclassifiedGallery(L.Callback):
    """The `k` most confidently wrong test examples as a grid titled "true → predicted (p)", when test ends.

    Writes `figures/misclassified_<split>.png` and its CSV twin (index in the split, true, predicted, confidence).
    """

    def __init__(self, k: int = 24, split: Literal["train", "val", "test"] = "test", max_cols: int = 8) -> None:
        """
        Args:
            k: How many examples to show (fewer when the model gets fewer wrong).
            split: Which split to search (the whole split is predicted once, in batches).
            max_cols: Columns of the grid.
        """
        if k < 1 or max_cols < 1:
            raise ValueError(f"k and max_cols must be >= 1, got k={k}, max_cols={max_cols}.")
        self.k, self.split, self.max_cols = k, split, max_cols

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return  # the figure is written on rank zero only; other ranks skip the work too
        pred = split_predictions(trainer, pl_module, self.split, who=self)
        chosen = most_confident_wrong(pred, self.k)
        names = class_names(trainer, pred.probs.shape[1], self)
        true, wrong, conf = pred.y[chosen].tolist(), pred.preds[chosen].tolist(), pred.confidence[chosen].tolist()
        index = pred.index[chosen].tolist()
        name = f"misclassified_{self.split}"
        save_table(trainer, name, ["index", "true", "predicted", "confidence"],
                   [[i, names[t], names[p], round(c, 6)] for i, t, p, c in zip(index, true, wrong, conf)])
        n_wrong = int((~pred.correct).sum())
        title = (f"The {len(chosen)} most confidently wrong of {len(pred.y)} {self.split} examples "
                 f"({n_wrong} wrong, accuracy {pred.correct.float().mean():.2%})")
        if len(chosen) == 0:
            fig, ax = plt.subplots(figsize=(5, 1.5))
            ax.axis("off")
            ax.text(0.5, 0.5, "No misclassified examples", ha="center", va="center")
            fig.suptitle(title)
            save_figure(trainer, fig, name, title)
            return
        images = display_images(trainer, pred.x[chosen], self)
        rows, cols = grid_shape(len(chosen), self.max_cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.1 * rows + 0.7), squeeze=False,
                                 layout="constrained")
        for ax in axes.flat:
            ax.axis("off")
        for ax, img, i, t, p, c in zip(axes.flat, images, index, true, wrong, conf):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(f"#{i}\n{names[t]} → {names[p]} (p={c:.2f})", fontsize=8)
        fig.suptitle(f"{title}\neach title: #index in the {self.split} split, true → predicted (confidence)",
                     fontsize=10)
        save_figure(trainer, fig, name, title)

