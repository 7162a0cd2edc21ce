"""Stop a run whose training loss has diverged, say why, and keep its last good checkpoint.

A training loss (the batch's unweighted mean cross-entropy, `outputs["ce"]`, when the module returns it; else
`outputs["loss"]`) that is NaN/inf, or more than `factor` × the median of the last `window` steps', stops the run
with `Diverged` (the run record writes `status: "diverged"` to results.json; the CLI exits with the message):
finishing the epoch would only train on NaN weights, and `LitlabCheckpoint` refuses to write `last.ckpt` once
`diverged` is set, so `last` and `best` keep the weights from before the blow-up.

Reading a loss on the host (`float(loss)`) waits for the accelerator to finish the step: once a step, that sync
would stall a GPU's queue of kernels. So on an accelerator the guard keeps each step's detached 0-d loss on the
device and reads them all at once every `sync_every` steps (one copy), then judges them in order and reports the
step and epoch of the first bad one. A bad loss read late has trained on for up to `sync_every - 1` steps; what
must never happen is a checkpoint of those weights, so the guard also reads its pending losses before every
checkpoint is written (`on_save_checkpoint`: Lightning builds the checkpoint dict before it writes the file, and an
exception there writes nothing), before every validation (its checkpoint, early-stopping and collapse decisions
would judge NaN weights) and at the end of each epoch, where training also ends. On a CPU a read costs nothing
and the guard checks every step, as before.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median
from typing import Any

import lightning as L
import torch


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


ACCELERATOR_SYNC_EVERY = 50  # one host read per 50 steps; a late stop trains at most 49 wasted steps, saves none


class DivergenceGuard(L.Callback):
    """Stops training on a non-finite or exploding loss (see the module docstring)."""

    def __init__(self, factor: float = 1e3, window: int = 50, warmup_steps: int = 10, check_every_n_steps: int = 1,
                 enabled: bool = True, floor: float = 1.0, sync_every: int | None = None) -> None:
        """
        Args:
            factor: Stop when the loss exceeds this many times the running median (inf: only non-finite losses).
            window: Steps in the running median.
            warmup_steps: Steps before the explosion test applies (non-finite losses always stop the run).
            check_every_n_steps: Watch the loss of every this many steps (the others are never looked at).
            enabled: False turns the guard off.
            floor: A finite loss at or below this never counts as an explosion, however small the running median:
                a curriculum's easy pool (or any near-perfect stretch) takes the median to ~1e-5, and the next
                ordinary batch (0.07) is then 1000 × it without anything having diverged. 1.0 is below an
                untrained net's cross-entropy (ln 10 = 2.3; ln 2 = 0.69 for two classes is the exception).
            sync_every: Read the watched losses on the host once every this many of them (one device sync, and
                under DDP one all-reduce, per read); the losses in between stay on the device, and every
                checkpoint write, validation and epoch end reads them first. None: 1 on a CPU (a read costs
                nothing there), 50 on an accelerator. A weights-only checkpoint (`save_weights_only`)
                skips the callbacks' `on_save_checkpoint`, so with one the guard reads every step.
        """
        if (factor <= 1 or window < 1 or warmup_steps < 0 or check_every_n_steps < 1 or floor < 0
                or (sync_every is not None and sync_every < 1)):
            raise ValueError(f"DivergenceGuard needs factor > 1, window >= 1, warmup_steps >= 0, check_every_n_steps"
                             f" >= 1, floor >= 0 and sync_every >= 1 (or None); got {factor}, {window}, "
                             f"{warmup_steps}, {check_every_n_steps}, {floor}, {sync_every}.")
        self.factor, self.warmup_steps, self.every, self.floor = factor, warmup_steps, check_every_n_steps, floor
        self.enabled, self.sync_every = enabled, sync_every
        self.reads_every = sync_every or 1  # `setup` resolves None from the device
        self.recent: deque[float] = deque(maxlen=window)
        self.pending: list[tuple[torch.Tensor, int, int]] = []  # (0-d loss on its device, global step, epoch)
        self.diverged = False
        self.report: dict[str, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        weights_only = any(cb.save_weights_only for cb in trainer.checkpoint_callbacks)
        if self.enabled and weights_only and (self.sync_every or 1) > 1:
            raise ValueError(f"--divergence.sync_every {self.sync_every} needs full checkpoints: a weights-only one "
                             "skips the hook where the guard reads its pending losses before the file is written, "
                             "so NaN weights could be saved. Drop --checkpoint.save_weights_only or "
                             "--divergence.sync_every.")
        accelerated = trainer.strategy.root_device.type != "cpu"
        self.reads_every = self.sync_every or (ACCELERATOR_SYNC_EVERY if accelerated and not weights_only else 1)

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
        self.pending.append((loss.detach(), trainer.global_step, trainer.current_epoch))  # no host read yet
        if len(self.pending) >= self.reads_every:
            self.check(trainer)

    # Read what is pending before anything acts on the weights: a checkpoint, a validation, the end of an epoch.
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.pending:
            self.check(trainer)  # raises before the file is written
            if self.state_key in checkpoint.get("callbacks", {}):  # taken before this hook: add the losses just read
                checkpoint["callbacks"][self.state_key] = self.state_dict()
        # The losses judge the weights *before* each update; the update that overflowed the weights themselves
        # shows only in the next loss. So look at the weights as saved: one reduction, one read per checkpoint.
        params = [p.detach() for p in pl_module.parameters()]
        if self.enabled and params and not bool(torch.isfinite(torch.stack([p.float().sum() for p in params]).sum())):
            self.stop(trainer, trainer.global_step, trainer.current_epoch, float("nan"),
                      "the weights became non-finite in the last update (NaN or inf)")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)  # also the end of training: Lightning ends the epoch first (max_steps, should_stop)

    def check(self, trainer: L.Trainer) -> None:
        """Read the pending losses (one device sync) and raise `Diverged` at the first non-finite or exploded one."""
        if not self.pending:  # the same on every DDP rank (they watch the same steps), so no rank waits alone
            return
        pending, self.pending = self.pending, []
        values = ([float(pending[0][0])] if len(pending) == 1  # a CPU's every-step read: no stack
                  else torch.stack([loss for loss, _, _ in pending]).tolist())  # [len(pending)] floats, one copy
        own = len(values)  # index of this rank's first bad loss (len: none)
        for i, (value, (_, step, _)) in enumerate(zip(values, pending)):
            # The median (a sort) only when the loss is above factor × the window's minimum (and the floor): most
            # steps skip it.
            reference = None
            if (math.isfinite(value) and self.recent and step > self.warmup_steps and value > self.floor
                    and value > self.factor * max(min(self.recent), 1e-12)):
                reference = median(self.recent)
            if not math.isfinite(value) or (reference is not None and value > self.factor * max(reference, 1e-12)):
                own = i
                break
            self.recent.append(value)
        first = own
        if getattr(trainer, "world_size", 1) > 1:
            # Every DDP rank stops together (one stopping alone would hang), at the first bad step of any rank, so
            # rank 0 (which writes results.json) names the same step as the rank that saw it: one all-reduce.
            index = torch.tensor(own, device=trainer.strategy.root_device)
            first = int(trainer.strategy.reduce(index, reduce_op="min"))
        if first == len(values):
            return
        value, (_, step, epoch) = values[first], pending[first]
        why = ("the training loss diverged on another DDP rank" if first != own else
               f"the training loss became {value}" if not math.isfinite(value) else
               f"the training loss jumped to {value:.4g}, more than {self.factor:g} × its running median "
               f"{reference:.4g}")
        self.stop(trainer, step, epoch, value, why)

    def stop(self, trainer: L.Trainer, step: int, epoch: int, value: float, why: str) -> None:
        self.diverged = True
        # The learning rate now: on an accelerator up to `sync_every` steps after the bad loss (a per-step schedule
        # may have moved it a little); recording it every step would add work to every step for a rare message.
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        lr = lrs[0] if len(set(lrs)) == 1 else lrs
        self.report = {"step": step, "epoch": epoch, "lr": lr, "loss": value}
        raise Diverged(
            f"training diverged at step {step} (epoch {epoch}, learning rate {lr}): {why}. "
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
