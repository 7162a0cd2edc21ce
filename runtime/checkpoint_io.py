"""Atomic checkpoint files: write to a temporary name beside the target, then rename over it.

Lightning's `TorchCheckpointIO` writes the target file in place, so a run killed mid-write leaves a truncated
`last.ckpt` that the next `--ckpt_path last` fails on. The CLI installs `AtomicCheckpointIO` on every run;
the rename is atomic on POSIX file systems, so `last.ckpt` is always a whole checkpoint (old or new).
A write killed outright (SIGKILL) leaves its temporary file, as large as a checkpoint. Its name carries the
writer's process id; the next save into that folder, and the start of every fit of the same experiment, remove
the temporaries of writers no longer alive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from runtime.files import replacing


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that never leaves a half-written checkpoint behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote (fsspec) paths: no rename there, keep Lightning's own write
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        remove_dead_temporaries(path.parent)
        # The temporary is named after this process, so the next fit can tell one left by a killed run.
        with replacing(path, tag=f".{os.getpid()}") as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def remove_dead_temporaries(folder: Path) -> None:
    for tmp in folder.glob(".*.ckpt.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
