"""The one optimizer path: every litlab LightningModule that trains with autograd subclasses `OptimizedModule`.

Its arguments (optimizer, lr, momentum, weight_decay, lr_decay, schedule, warmup, nesterov) are declared here once; a
module takes them through `**kwargs` (jsonargparse follows `super().__init__(**kwargs)`, so `--model.help` lists them
for every module alike) and may re-declare one only to change its default (TripletEncoder: adam, 1e-3).
`make_optimizer` builds what they ask for; benchmarks build their plain loops' optimisers with it too.
(`ScratchMLP` is the exception on purpose: hand-written SGD, no autograd in its update.)
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch

OptimizerName = Literal["sgd", "adam", "adamw"]
Schedule = Literal["exponential", "onecycle"]


class OptimizedModule(L.LightningModule):
    """A LightningModule whose optimiser and learning-rate schedule come from these flat arguments."""

    def __init__(
        self,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_decay: float = 1.0,
        schedule: Schedule = "exponential",
        warmup: float = 0.25,
        nesterov: bool = False,
    ) -> None:
        """
        Args:
            optimizer: sgd (with `momentum`), adam or adamw.
            lr: Learning rate.
            momentum: SGD momentum (ignored by adam/adamw).
            weight_decay: L2 penalty coefficient (decoupled for adamw).
            lr_decay: Multiply the learning rate by this after every epoch (e.g. 0.97); 1.0 keeps it fixed.
            schedule: "exponential" (per epoch, by `lr_decay`) or "onecycle": every step, the learning rate rises
                from lr/25 to `lr` over the first `warmup` fraction of training, then anneals (cosine) to ~0 at
                the last step of `trainer.max_epochs`/`max_steps` (the fast recipes, configs/fast_*.yaml).
            warmup: Fraction of the steps spent rising to `lr` under the onecycle schedule.
            nesterov: Nesterov momentum for sgd (the fast CIFAR-10 recipe's, after airbench).
        """
        super().__init__()
        big = torch.finfo(torch.float32).max  # the optimiser computes in float32: larger values overflow
        if (not 0 < lr < big or not 0 < lr_decay <= 1 or not 0 <= weight_decay < big or not 0 <= momentum < 1
                or not 0 < warmup < 1):
            raise ValueError(
                f"Need lr > 0, 0 < lr_decay <= 1, weight_decay >= 0, 0 <= momentum < 1, 0 < warmup < 1 (lr and "
                f"weight_decay below 3.4e38); got lr={lr}, lr_decay={lr_decay}, weight_decay={weight_decay}, "
                f"momentum={momentum}, warmup={warmup}."
            )
        if optimizer not in ("sgd", "adam", "adamw") or schedule not in ("exponential", "onecycle"):
            raise ValueError(f"Unknown optimizer {optimizer!r} or schedule {schedule!r}: choose sgd, adam or adamw, "
                             "and exponential or onecycle.")
        # Records the arguments of every __init__ in the chain (this one and the subclass's), defaults included.
        self.save_hyperparameters()

    def configure_optimizers(self) -> Any:
        total = None
        if self.hparams.schedule == "onecycle":
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ValueError("schedule=onecycle needs a finite training length: set trainer.max_epochs or "
                                 "max_steps.")
        # Only trainable parameters: a finetuning callback (callbacks.EncoderFinetuning) freezes a backbone
        # before this runs and adds it back later as its own param group (with a lower learning rate).
        params = [p for p in self.parameters() if p.requires_grad]
        return make_optimizer(params, self.hparams, int(total or 0))


def make_optimizer(params: Any, hp: Any, total_steps: int = 0) -> Any:
    """The optimiser and schedule that `hp` (an OptimizedModule's hparams) asks for, as `configure_optimizers`
    returns them; `total_steps` is the onecycle schedule's length."""
    if hp.optimizer == "sgd":
        nesterov = hp.get("nesterov", False) and hp.momentum > 0  # torch refuses nesterov without momentum
        opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=nesterov)
    elif hp.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
    elif hp.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {hp.optimizer!r}: choose sgd, adam or adamw.")
    if hp.get("schedule", "exponential") == "onecycle":
        # cycle_momentum off: `momentum` keeps its meaning; the schedule only moves the learning rate.
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=total_steps,
                                                    pct_start=hp.warmup, cycle_momentum=False)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
    if hp.lr_decay == 1.0:
        return opt
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(opt, gamma=hp.lr_decay)}
