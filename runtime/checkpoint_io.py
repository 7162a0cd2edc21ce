"""Atomic checkpoint files: write to a temporary name beside the target, then rename over it.

Lightning's `TorchCheckpointIO` writes the target file in place, so a run killed mid-write leaves a truncated
`last.ckpt` that the next `--ckpt_path last` fails on. The CLI installs `AtomicCheckpointIO` on every run;
the rename is atomic on POSIX file systems, so `last.ckpt` is always a whole checkpoint (old or new).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from runtime.files import replacing


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that never leaves a half-written checkpoint behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote (fsspec) paths: no rename there, keep Lightning's own write
            return super().save_checkpoint(checkpoint, path, storage_options)
        with replacing(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
