"""The benchmarks' one clock: wall and process-CPU seconds, read after the GPU has finished its queued work.

CUDA kernels run asynchronously: without `torch.cuda.synchronize()` a clock read after a training step measures
only how fast Python queued the kernels. On a CPU the sync is skipped (nothing is queued).
"""

from __future__ import annotations

import time

import torch


def now() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds), after waiting for the current CUDA device if one is in use."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()
