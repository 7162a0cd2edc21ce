"""Faults on demand for the reliability tests: die with SIGKILL, get SIGTERM, raise, or make the loss NaN at a step."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
import torch


class KillAtStep(L.Callback):
    """SIGKILL this process once `global_step` reaches `step` (a crash: no hooks, no flush, no cleanup)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NaNAtStep(L.Callback):
    """Turn the weights into NaN after the optimizer step that reaches `step`, so the next loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class RaiseAtStep(L.Callback):
    """Raise `KeyboardInterrupt` (as Ctrl-C does) or a `RuntimeError` (a bug) once `global_step` reaches `step`."""

    def __init__(self, step: int, what: str = "KeyboardInterrupt") -> None:
        self.step, self.what = step, what

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt if self.what == "KeyboardInterrupt" else RuntimeError("a bug in a callback")


class TermAtStep(L.Callback):
    """Send this process SIGTERM once `global_step` reaches `step` (a scheduler or `kill` stopping the run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
