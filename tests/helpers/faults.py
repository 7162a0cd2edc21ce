"""Faults on demand for the reliability tests: die with SIGKILL, get SIGTERM, raise, or make the loss NaN at a
step, or a net that predicts one class."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
import torch

from lit_models.nets import Net


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


class OneClassNet(Net):
    """A classifier net that always predicts class 0: a scripted collapse (its one layer gets no gradient)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = ()) -> None:
        super().__init__()  # hidden: ignored; taken so that the tests' `--model.net.hidden [16]` applies to it too
        self.linear = torch.nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)
        self.register_buffer("bias", torch.tensor([100.0] + [0.0] * (num_classes - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0 * self.linear(x.flatten(1)) + self.bias  # [N, num_classes], argmax 0 for every input


class TermAtStep(L.Callback):
    """Send this process SIGTERM once `global_step` reaches `step` (a scheduler or `kill` stopping the run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
