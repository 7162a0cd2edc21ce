"""The benchmarks' one clock read: wall and CPU seconds, after the GPU has finished its queued work.

CUDA kernels run asynchronously: without a `torch.cuda.synchronize()` a clock read after a training step on a GPU
times the kernel *launches*, not the step. Every clock read of benchmarks/*.py goes through `clocks()`, which waits
for the device first whenever CUDA is in use in this process (on a CPU-only machine it is two plain clock reads).
"""

from __future__ import annotations

import time

import torch


def clocks() -> tuple[float, float]:
    """(wall, CPU) seconds: `time.perf_counter()` and `time.process_time()`, after a CUDA synchronize if CUDA is on."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # no CUDA context made just to read a clock
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()
