"""Speed-ups for a run, selectable from config (configs/gpu.yaml; configs/fast_cnn_cifar10.yaml on a CPU).

The data modules already keep each split on the device as uint8 and normalise a batch on the fly, so the
remaining levers are the net's memory layout and compilation; bf16 autocast is the Trainer's `precision`, which
the CLI keeps on a GPU or a CPU with native bf16 (`cpu_has_bf16`).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), as oneDNN's bf16 kernels need."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


class Accelerate(L.Callback):
    """Puts the net in `channels_last` memory format (convolutional nets) and/or compiles it, on GPUs only.

    Applied once, at `setup`, to `pl_module.net` in place (`nn.Module.compile`), so parameter names and therefore
    checkpoints stay the same as without it.
    """

    def __init__(self, channels_last: bool = True, compile: bool = False, compile_mode: str | None = None,
                 on_cpu: bool = False) -> None:
        """
        Args:
            channels_last: Store conv weights NHWC, which tensor cores want (Conv2d nets only; MLPs are left as is).
            compile: `torch.compile` the net (the first steps are slow while it compiles; pays off for long runs).
            compile_mode: torch.compile's mode: None (default), "reduce-overhead" (CUDA graphs) or "max-autotune".
            on_cpu: Apply on a CPU too (off by default: compiling costs more than a short CPU run saves; on a
                2-core AVX-512 CPU channels_last made a small conv net's step 1.5x faster, in fp32 and bf16 alike).
        """
        self.channels_last, self.compile, self.compile_mode, self.on_cpu = channels_last, compile, compile_mode, on_cpu
        self.applied: list[str] = []  # what was done, for the log and tests

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device  # where the net is going (setup runs before it is moved)
        if self.applied or not self.active_on(device):
            return
        self.applied = self.apply(pl_module.net)
        rank_zero_info(f"Accelerate: {', '.join(self.applied) or 'nothing to do'} on {device}")

    def active_on(self, device: torch.device) -> bool:
        """Whether this callback changes a net bound for `device` (on a CPU only with `on_cpu`)."""
        return device.type != "cpu" or self.on_cpu

    def apply(self, net: nn.Module) -> list[str]:
        """Put `net` (in place) in the layout this callback asks for and/or compile it; returns what was done. Also
        how benchmarks/time_to_accuracy.py prepares its plain loop's twin of the net exactly as the run's."""
        done = []
        if self.channels_last and any(isinstance(m, nn.Conv2d) for m in net.modules()):
            net.to(memory_format=torch.channels_last)
            done.append("channels_last")
        if self.compile:
            net.compile(mode=self.compile_mode)
            done.append("compile")
        return done
