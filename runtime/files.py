"""Writing a run's files: atomically (temporary name, then rename: a crash never leaves half a file), into the
run directory. No plotting here, so the CLI, the models and the experiments runner import it without matplotlib."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L


def run_dir(trainer: L.Trainer) -> Path:
    """The run directory: the first logger's folder (`runs/<name>/version_<n>/`), else default_root_dir.

    `trainer.log_dir` without its broadcast: that is a collective, and the writers here run on rank zero only
    (under DDP rank zero would wait for ranks that never call it). On rank zero the value is the same.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    dirpath = None
    if trainer.loggers:
        logger = trainer.loggers[0]
        dirpath = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    return Path(dirpath or trainer.default_root_dir)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield `.<name>.tmp` beside `path` to write; when the block ends without error, rename it over `path`
    (atomic on POSIX: readers see the old file or the new one, never half of one). The one atomic writer:
    `write_atomic`, `AtomicCheckpointIO` and scripts/make_mnist_subset.py all go through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path` through `replacing`."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
