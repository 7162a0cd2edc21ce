"""ConfusionMatrix: counts and row-normalised percentages of (true, predicted) pairs for train / val / test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from callbacks.analysis.figures import save_figure, save_table, save_text
from callbacks.analysis.testset import class_names
from datamodules.contract import require

STAGES = ("train", "val", "test")


def confusion_counts(preds: Tensor, targets: Tensor, num_classes: int, out: Tensor | None = None) -> Tensor:
    """[num_classes, num_classes] int64 counts, row = true class, column = predicted class; added to `out`.

    One accumulating `index_put_` into the flat matrix (a bincount of true * K + pred): unlike `torch.bincount`,
    which reads the input's max on the host, it never waits for the GPU, and it has a deterministic kernel.
    """
    if out is None:
        out = torch.zeros(num_classes, num_classes, dtype=torch.long, device=preds.device)
    flat = (targets * num_classes + preds).long()
    out.view(-1).index_put_((flat,), torch.ones_like(flat), accumulate=True)
    return out


def most_confused(counts: Tensor, top_k: int) -> list[tuple[int, int, int, float]]:
    """The `top_k` largest off-diagonal cells as (true, predicted, count, % of the true class's row)."""
    counts = counts.cpu().long()
    off = counts.clone()
    off.fill_diagonal_(0)
    rows = counts.sum(1).clamp_min(1)
    order = off.flatten().argsort(descending=True, stable=True)[:top_k]
    k = counts.shape[1]
    pairs = [(int(i) // k, int(i) % k) for i in order]
    return [(t, p, int(off[t, p]), 100.0 * float(off[t, p]) / float(rows[t])) for t, p in pairs if off[t, p] > 0]


class ConfusionMatrix(L.Callback):
    """Confusion matrices of the model's own step outputs (`preds`; targets from the batch), per stage.

    Accumulated on the device with one scatter-add per batch (no host sync); at the end of each epoch the
    matrix is summed over DDP ranks. Train and val keep the last epoch's matrix (the training one counts
    predictions made while the weights changed, in train mode) and write it when fit ends; test writes when
    test ends. For each stage: `confusion_<stage>.png` (counts, and row-normalised % when `normalize`),
    `confusion_<stage>.csv` (true, predicted, count, % of row) and `confusion_<stage>.txt` (most confused pairs).
    """

    def __init__(self, stages: Sequence[str] = ("test",), normalize: bool = True, top_k: int = 10) -> None:
        """
        Args:
            stages: Which of train, val, test to count.
            normalize: Also draw the row-normalised matrix (% of each true class), beside the counts.
            top_k: How many of the most confused (true, predicted) pairs the text summary lists.
        """
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages:
            raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {list(stages)}.")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        self.stages, self.normalize, self.top_k = tuple(dict.fromkeys(stages)), normalize, top_k
        self._running: dict[str, Tensor] = {}  # stage -> counts of the epoch in progress (on device)
        self.counts: dict[str, Tensor] = {}  # stage -> counts of the last finished epoch (CPU, all ranks)
        self.epochs: dict[str, int] = {}  # stage -> that epoch (0-based, as in metrics.csv)

    # -- accumulation -------------------------------------------------------------------------------------
    def _add(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, outputs: Any, batch: Any) -> None:
        if stage not in self.stages or trainer.sanity_checking:
            return
        if not isinstance(outputs, dict) or "preds" not in outputs:
            raise RuntimeError(
                f"ConfusionMatrix needs the {stage} step to return a dict with 'preds' (as lit_models.Classifier "
                f"does); {type(pl_module).__name__} returned {type(outputs).__name__}."
            )
        preds = outputs["preds"]
        targets = outputs.get("targets", batch[1])
        k = int(getattr(pl_module.hparams, "num_classes", 0) or require(trainer, self, "num_classes").num_classes)
        self._running[stage] = confusion_counts(preds, targets, k, self._running.get(stage))

    def _finish_epoch(self, trainer: L.Trainer, stage: str) -> None:
        if stage not in self.stages or trainer.sanity_checking or stage not in self._running:
            return
        # Every rank reaches here (epoch end), so the sum over ranks cannot deadlock.
        counts = trainer.strategy.reduce(self._running.pop(stage), reduce_op="sum").cpu()
        self.counts[stage] = counts.round().long() if counts.is_floating_point() else counts
        self.epochs[stage] = trainer.current_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._add(trainer, pl_module, "train", outputs, batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(trainer, pl_module, "val", outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(trainer, pl_module, "test", outputs, batch)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._finish_epoch(trainer, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish_epoch(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish_epoch(trainer, "test")

    def on_fit_end(self, trainer, pl_module) -> None:
        for stage in ("train", "val"):
            if stage in self.counts:
                self._write(trainer, stage, f"epoch {self.epochs[stage]}, the last")

    def on_test_end(self, trainer, pl_module) -> None:
        if "test" in self.counts:
            self._write(trainer, "test", "tested model")

    # -- output ---------------------------------------------------------------------------------------------
    def _write(self, trainer: L.Trainer, stage: str, when: str) -> None:
        if not trainer.is_global_zero:
            return
        counts = self.counts[stage]
        k = counts.shape[0]
        names = class_names(trainer, k, self)
        rows = counts.sum(1, keepdim=True)
        pct = (100.0 * counts / rows.clamp_min(1)).numpy()  # % of each true class
        name = f"confusion_{stage}"
        save_table(trainer, name, ["true", "predicted", "count", "percent_of_true"],
                   [[names[t], names[p], int(counts[t, p]), round(float(pct[t, p]), 4)]
                    for t in range(k) for p in range(k)])
        total, correct = int(counts.sum()), int(counts.trace())
        pairs = most_confused(counts, self.top_k)
        lines = [f"Most confused pairs, {stage} ({when}): {total} examples, accuracy {correct / max(total, 1):.2%}",
                 "true -> predicted: count (% of the true class)"]
        lines += [f"{names[t]} -> {names[p]}: {c} ({q:.1f}%)" for t, p, c, q in pairs] or ["no mistakes"]
        save_text(trainer, f"{name}.txt", "\n".join(lines) + "\n")
        self._figure(trainer, name, counts.numpy(), pct, names, f"Confusion matrix, {stage} ({when}): "
                     f"{total} examples, accuracy {correct / max(total, 1):.2%}")

    def _figure(self, trainer: L.Trainer, name: str, counts: np.ndarray, pct: np.ndarray, names: list[str],
                title: str) -> None:
        k = len(names)
        # The % panel colours the mistakes only (diagonal greyed out): with 97 % on the diagonal a shared scale
        # would leave every error the same pale colour.
        off = np.ma.masked_array(pct, mask=np.eye(k, dtype=bool))
        panels = [(counts, "counts", "Blues", "d", max(counts.max(), 1))]
        if self.normalize:
            panels.append((off, "% of true class (row); diagonal = recall, grey", "Oranges", "%",
                           max(float(off.max()) if off.count() else 0.0, 1e-9)))
        size = max(4.5, 0.45 * k + 2)
        fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels) + 0.5, size), squeeze=False,
                                 layout="constrained")
        wide = max(map(len, names)) > 2
        for ax, (values, label, cmap, fmt, vmax) in zip(axes[0], panels):
            cm = plt.get_cmap(cmap).copy()
            cm.set_bad("lightgrey")
            im = ax.imshow(values, cmap=cm, vmin=0, vmax=vmax)
            fig.colorbar(im, ax=ax, shrink=0.8, label="count" if fmt == "d" else "% of the true class (errors)")
            ax.set_xticks(range(k), names, rotation=45 if wide else 0, ha="right" if wide else "center",
                          rotation_mode="anchor")
            ax.set_yticks(range(k), names)
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            ax.set_title(label)
            if k > 20:  # numbers in cells stay legible up to ~20 classes
                continue
            shown = counts if fmt == "d" else pct
            for t in range(k):
                for p in range(k):
                    v = shown[t, p]
                    if v == 0 and t != p:
                        continue
                    text = format(v, "d") if fmt == "d" else (f"{v:.0f}" if v >= 9.95 else f"{v:.1f}")
                    dark = t != p and v > vmax / 2 if fmt != "d" else v > vmax / 2
                    ax.text(p, t, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        fig.suptitle(title)
        save_figure(trainer, fig, name, title)
