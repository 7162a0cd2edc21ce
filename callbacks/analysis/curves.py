"""LearningCurves: loss and accuracy per training iteration, and per evaluation for val and test, on one figure."""

from __future__ import annotations

import math
import pickle

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from callbacks.analysis.figures import save_figure, save_table


def checkpoint_step(trainer: L.Trainer) -> tuple[int, int] | None:
    """(global step, epoch) of the checkpoint being tested, so the test point sits where that model was saved
    (the best checkpoint is often not the last step); None without a checkpoint (the model as it is)."""
    if not trainer.ckpt_path:
        return None
    try:  # safe loading, as the CLI's default; mmap: the weights are not read
        ckpt = torch.load(trainer.ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # a file only the user's --weights_only false trusts: never unpickle it here
        rank_zero_warn(f"LearningCurves: {trainer.ckpt_path} does not load safely; its test point is placed at "
                       "the current step.")
        return None
    return int(ckpt.get("global_step", trainer.global_step)), int(ckpt.get("epoch", trainer.current_epoch))


def moving_mean(values: list[float], k: int) -> np.ndarray:
    """Mean of each value and the k - 1 before it (fewer at the start): the trend through per-step noise."""
    c = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    n = np.arange(1, len(values) + 1)
    lo = np.maximum(n - k, 0)
    return (c[n] - c[lo]) / (n - lo)


class LearningCurves(L.Callback):
    """The reports' "iteration vs loss for training and testing" plot: `learning_curves.png` and its CSV.

    Train: the loss of every step (`outputs["loss"]`) and the batch accuracy (from `outputs["preds"]` when the
    step returns them, as `lit_models.Classifier` does). Both are kept on the device as one [2] tensor per step
    and moved to the CPU once per epoch. Val/test: the epoch's logged `<stage>/loss` and `<stage>/acc`, plotted
    at the iteration (optimizer step) they were evaluated at. Written when fit ends and again when test ends.
    """

    def __init__(self) -> None:
        self._pending: list[Tensor] = []  # this epoch's [loss, acc] per step, on device
        self._pending_steps: list[int] = []
        # rows of (stage, iteration, epoch, loss, acc); acc is NaN when unknown
        self.rows: list[tuple[str, int, int, float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach().float()
        preds = outputs.get("preds") if isinstance(outputs, dict) else None
        acc = (preds == batch[1]).float().mean() if preds is not None else torch.full_like(loss, math.nan)
        self._pending.append(torch.stack([loss, acc]))
        self._pending_steps.append(trainer.global_step)  # Python int: steps taken so far (this one included)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._pending:
            return
        values = torch.stack(self._pending).cpu().tolist()  # the one host sync per epoch
        epoch = trainer.current_epoch
        self.rows += [("train", s, epoch, lo, ac) for s, (lo, ac) in zip(self._pending_steps, values)]
        self._pending, self._pending_steps = [], []

    def _evaluated(self, trainer: L.Trainer, stage: str, step: tuple[int, int] | None = None) -> None:
        metrics = trainer.callback_metrics
        if f"{stage}/loss" not in metrics:
            return
        acc = metrics.get(f"{stage}/acc")
        step, epoch = step or (trainer.global_step, trainer.current_epoch)
        self.rows.append((stage, step, epoch, float(metrics[f"{stage}/loss"]),
                          float(acc) if acc is not None else math.nan))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._evaluated(trainer, "val")

    def on_fit_end(self, trainer, pl_module) -> None:
        self.on_train_epoch_end(trainer, pl_module)  # an epoch cut short (max_steps, interrupt)
        self._write(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._evaluated(trainer, "test", checkpoint_step(trainer))
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        save_table(trainer, "learning_curves", ["stage", "iteration", "epoch", "loss", "acc"], self.rows)
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
        styles = {"train": dict(lw=0.6, alpha=0.35, color="tab:blue"),
                  "val": dict(marker="o", ms=4, lw=1.5, color="tab:orange"),
                  "test": dict(marker="*", ms=12, ls="none", color="tab:red")}
        for stage, style in styles.items():
            rows = [r for r in self.rows if r[0] == stage]
            if not rows:
                continue
            steps = [r[1] for r in rows]
            label = {"train": "train (per iteration)", "val": "val (per epoch)", "test": "test"}[stage]
            ax_loss.plot(steps, [r[3] for r in rows], label=label, **style)
            if not all(math.isnan(r[4]) for r in rows):
                ax_acc.plot(steps, [100 * r[4] for r in rows], label=label, **style)
            k = len(rows) // 50
            if stage == "train" and k > 1:  # per-step values are noisy: draw their trend on top
                for ax, col, scale in ((ax_loss, 3, 1), (ax_acc, 4, 100)):
                    ax.plot(steps, scale * moving_mean([r[col] for r in rows], k), color="navy", lw=1.2,
                            label=f"train (mean of last {k} iterations)")
        for ax, what in ((ax_loss, "loss (cross-entropy)"), (ax_acc, "accuracy (%)")):
            ax.set_xlabel("iteration (optimizer step)")
            ax.set_ylabel(what)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        losses = [r[3] for r in self.rows if math.isfinite(r[3]) and r[3] > 0]
        if losses and max(losses) / min(losses) > 30:
            ax_loss.set_yscale("log")  # the first iterations' loss would flatten everything else
        ax_loss.set_title("Loss")
        ax_acc.set_title("Accuracy")
        title = "Learning curves (test: the tested checkpoint, at the iteration it was saved)"
        fig.suptitle(title)
        save_figure(trainer, fig, "learning_curves", title)
