"""Writing a run's files: atomically (temporary name, then rename: a crash never leaves half a file), into the
run directory. No plotting here, so the CLI, the models and the experiments runner import it without matplotlib."""

from __future__ import annotations

import json
import math
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
def replacing(path: Path, tag: str = "") -> Iterator[Path]:
    """Yield `.<name><tag>.tmp` beside `path` to write; when the block ends without error, rename it over `path`
    (atomic on POSIX: readers see the old file or the new one, never half of one); on any error (a full disk, a
    file-size limit) the temporary is removed. The one atomic writer: `write_atomic`, `AtomicCheckpointIO` and
    scripts/make_mnist_subset.py all go through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{tag}.tmp")
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
    """Strict JSON: a NaN or infinite number (a diverged run's loss) is written as null, which every JSON reader
    accepts (Python's default would write a bare `NaN`)."""
    return write_atomic(path, json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data
