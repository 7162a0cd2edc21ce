"""Stop a run whose training loss has diverged, say why, and keep its last good checkpoint.

A training loss (the batch's unweighted mean cross-entropy, `outputs["ce"]`, when the module returns it; else
`outputs["loss"]`) that is NaN/inf, or more than `factor` × the median of the last `window` steps', stops the run
at once with `Diverged` (the run record writes `status: "diverged"` to results.json; the CLI exits with the
message): finishing the epoch would only train on NaN weights, and `LitlabCheckpoint` refuses to write
`last.ckpt` once `diverged` is set, so `last` and `best` keep the weights from before the blow-up.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median
from typing import Any

import lightning as L


class TrainingStopped(RuntimeError):
    """A guard stopped training: the run record (runtime/run_record.py) writes `status` and the `report` dict to
    results.json; the CLI prints the message."""

    status = "stopped"

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


class Diverged(TrainingStopped):
    """The training loss became non-finite or exploded; the message names the step, the LR and what to try."""

    status = "diverged"


class DivergenceGuard(L.Callback):
    """Stops training on a non-finite or exploding loss (see the module docstring)."""

    def __init__(self, factor: float = 1e3, window: int = 50, warmup_steps: int = 10, check_every_n_steps: int = 1,
                 enabled: bool = True, floor: float = 1.0) -> None:
        """
        Args:
            factor: Stop when the loss exceeds this many times the running median (inf: only non-finite losses).
            window: Steps in the running median.
            warmup_steps: Steps before the explosion test applies (non-finite losses always stop the run).
            check_every_n_steps: Check every this many steps; reading the loss syncs an accelerator.
            enabled: False turns the guard off.
            floor: A finite loss at or below this never counts as an explosion, however small the running median:
                a curriculum's easy pool (or any near-perfect stretch) takes the median to ~1e-5, and the next
                ordinary batch (0.07) is then 1000 × it without anything having diverged. 1.0 is below an
                untrained net's cross-entropy (ln 10 = 2.3; ln 2 = 0.69 for two classes is the exception).
        """
        if factor <= 1 or window < 1 or warmup_steps < 0 or check_every_n_steps < 1 or floor < 0:
            raise ValueError(f"DivergenceGuard needs factor > 1, window >= 1, warmup_steps >= 0, check_every_n_steps"
                             f" >= 1 and floor >= 0; got {factor}, {window}, {warmup_steps}, {check_every_n_steps}, "
                             f"{floor}.")
        self.factor, self.warmup_steps, self.every, self.floor = factor, warmup_steps, check_every_n_steps, floor
        self.enabled = enabled
        self.recent: deque[float] = deque(maxlen=window)
        self.diverged = False
        self.report: dict[str, Any] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.enabled or trainer.global_step % self.every:
            return
        # The unweighted mean cross-entropy when the module gives it (`Classifier`'s "ce"): a sample weighting
        # shrinks the loss it minimises by design — self-paced towards 0 — so a guard on that loss would take an
        # ordinary batch after a near-zero stretch for an explosion, and miss a weighting-induced collapse.
        loss = outputs.get("ce", outputs["loss"]) if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach())
        step = trainer.global_step
        # The median (a sort) only when the loss is above factor × the window's minimum (and the floor): most
        # steps skip it.
        reference = None
        if (math.isfinite(value) and self.recent and step > self.warmup_steps and value > self.floor
                and value > self.factor * max(min(self.recent), 1e-12)):
            reference = median(self.recent)
        exploded = reference is not None and value > self.factor * max(reference, 1e-12)
        healthy = math.isfinite(value) and not exploded
        if getattr(trainer, "world_size", 1) > 1:  # every DDP rank stops together (one stopping alone would hang)
            healthy = trainer.strategy.reduce_boolean_decision(healthy, all=True)
        if healthy:
            self.recent.append(value)
            return
        self.diverged = True
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        lr = lrs[0] if len(set(lrs)) == 1 else lrs
        why = (f"the training loss became {value}" if not math.isfinite(value) else
               f"the training loss jumped to {value:.4g}, more than {self.factor:g} × its running median "
               f"{reference:.4g}" if exploded else "the training loss diverged on another DDP rank")
        self.report = {"step": step, "epoch": trainer.current_epoch, "lr": lr, "loss": value}
        raise Diverged(
            f"training diverged at step {step} (epoch {trainer.current_epoch}, learning rate {lr}): {why}. "
            f"Try a lower learning rate (e.g. --model.lr {_lower(lr)}), gradient clipping "
            "(--trainer.gradient_clip_val 1.0), or batch normalisation. The checkpoints keep the weights from "
            "before the divergence.",
            self.report,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recent.extend(state_dict.get("recent", []))


def _lower(lr: Any) -> str:
    return f"{lr / 10:g}" if isinstance(lr, (int, float)) else "<a tenth of it>"
