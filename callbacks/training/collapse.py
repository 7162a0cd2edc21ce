"""Stop a run whose model has collapsed, and say why: a collapse is not a success.

A validation check counts as collapsed when the accuracy is at chance — at most `margin` above what always
predicting the split's most common class scores, from the data module's `class_counts("val")` (0.1135 on
MNIST's test set, 0.5 for two balanced classes) — or when at least `one_class` of the predictions fall on one
class. `patience` such checks in a row stop the run with `Collapsed`: the CLI writes `status: "collapsed"` to
results.json and exits with one `litlab:` line naming the likely cause and the fix. The usual cause is a step
too large for the loss — a high learning rate, or a sample weighting that piles the gradient onto a few
examples (docs/sample_weighting.md) — which knocks the net onto one class and keeps it there.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from callbacks.training.divergence import TrainingStopped
from datamodules.contract import require


class Collapsed(TrainingStopped):
    """The model sat at chance or on one class for `patience` validation checks; the message says what to try."""

    status = "collapsed"


class CollapseGuard(L.Callback):
    """Stops training when the model has collapsed (see the module docstring)."""

    def __init__(self, patience: int = 3, margin: float = 0.02, one_class: float = 0.9, enabled: bool = True) -> None:
        """
        Args:
            patience: Stop after this many collapsed validation checks in a row.
            margin: A check is "at chance" when its accuracy is at most chance + margin (chance: always
                predicting the validation split's most common class).
            one_class: A check is collapsed when at least this fraction of its predictions are one class.
            enabled: False turns the guard off.
        """
        if patience < 1 or not 0 <= margin < 1 or not 0 < one_class <= 1:
            raise ValueError(f"CollapseGuard needs patience >= 1, 0 <= margin < 1 and 0 < one_class <= 1; got "
                             f"{patience}, {margin}, {one_class}.")
        self.patience, self.margin, self.one_class, self.enabled = patience, margin, one_class, enabled
        self.streak: list[dict[str, Any]] = []  # the collapsed checks since the last healthy one
        self._k: int | None = None  # classes to count; None: off (disabled, or no data module)
        self._sums: Tensor | None = None  # [num_classes + 1]: predictions per class, then the correct ones

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sums = None
        # Chance level comes from the data module's class counts (LitlabData); bare dataloaders: off.
        self._k = (require(trainer, self, "class_counts", "num_classes").num_classes
                   if self.enabled and trainer.datamodule is not None else None)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._k is None or trainer.sanity_checking or not isinstance(outputs, dict) or "preds" not in outputs:
            return
        preds, targets, k = outputs["preds"], outputs["targets"], self._k
        # Two small device ops per validation batch; nothing is read back until the check.
        batch_sums = torch.cat([torch.bincount(preds, minlength=k), (preds == targets).sum().view(1)])
        self._sums = batch_sums if self._sums is None else self._sums + batch_sums

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._sums is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        sums = trainer.strategy.reduce(self._sums, reduce_op="sum").cpu()  # the whole split on every DDP rank
        predicted, correct = sums[:-1], float(sums[-1])
        n = float(predicted.sum())
        val_counts = trainer.datamodule.class_counts("val")
        chance = float(val_counts.max()) / float(val_counts.sum())
        top = int(predicted.argmax())
        check = {"epoch": trainer.current_epoch, "acc": correct / n, "chance": chance,
                 "top_class": top, "top_share": float(predicted[top]) / n}
        if check["acc"] > chance + self.margin and check["top_share"] < self.one_class:
            self.streak = []
            return
        self.streak.append(check)
        if len(self.streak) >= self.patience:
            raise Collapsed(self.message(trainer, pl_module), {"collapse": self.streak[-self.patience:]})

    def message(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        last, first = self.streak[-1], self.streak[-self.patience]
        name = require(trainer, self, "class_names").class_names[last["top_class"]]
        hp = getattr(pl_module, "hparams", {})
        lr, weighting = hp.get("lr"), getattr(pl_module, "weighting", None)
        weighted = (f", with sample weighting {weighting!r}, which concentrates the gradient on a few examples"
                    if weighting is not None else "")
        lower = f" (e.g. --model.lr {lr / 10:g})" if isinstance(lr, (int, float)) else ""
        gentler = (" or a gentler weighting (e.g. configs/weighting/effective_number.yaml, or none)"
                   if weighting is not None else "")
        return (f"the model collapsed: for {self.patience} validation checks in a row (epochs {first['epoch']}–"
                f"{last['epoch']}) its accuracy was {last['acc']:.3f} (chance, always predicting the most common "
                f"class: {last['chance']:.3f}) and {last['top_share']:.0%} of its predictions were class {name}. "
                f"Likely cause: steps too large for the loss (learning rate {lr}{weighted}). Try a lower learning "
                f"rate{lower}{gentler}; if train/loss never fell, the steps are too small instead: raise the "
                "learning rate or train longer.")

    def state_dict(self) -> dict[str, Any]:
        return {"streak": list(self.streak)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.streak = list(state_dict.get("streak", []))
