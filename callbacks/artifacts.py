"""Writing a run's files: atomically, into the run directory, on rank zero, and handed to every logger.

Every analysis callback goes through `save_figure` / `save_table` / `save_text`, so there is one place that
knows where files go (`<run dir>/figures/`), how they are written (temporary name, then rename: a crash never
leaves half a file) and how loggers receive them (`log_image` where a logger has it, e.g. W&B; the CSV logger
has nothing to receive a picture, so the file in the run directory is the record).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")  # no display on training machines; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402


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


def figures_dir(trainer: L.Trainer) -> Path:
    path = run_dir(trainer) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write to `.<name>.tmp` beside `path`, then rename over it (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:  # a full disk or a file-size limit: no half-written temporary left behind
        tmp.unlink(missing_ok=True)
        raise
    return path


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


def save_figure(trainer: L.Trainer, fig: plt.Figure, name: str, caption: str | None = None) -> Path | None:
    """Save `fig` as `figures/<name>.png`, give it to every logger that takes images, and close it.

    Returns the path on rank zero, None elsewhere. The figure is closed in every case (no leaks across epochs).
    """
    try:
        if not trainer.is_global_zero:
            return None
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        path = write_atomic(figures_dir(trainer) / f"{name}.png", buf.getvalue())
    finally:
        plt.close(fig)
    for logger in trainer.loggers:
        log_image = getattr(logger, "log_image", None)  # WandbLogger, TensorBoard-like loggers
        if callable(log_image):
            log_image(key=f"figures/{name}", images=[str(path)], step=trainer.global_step,
                      **({"caption": [caption]} if caption else {}))
    return path


def save_table(trainer: L.Trainer, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path | None:
    """Save rows as `figures/<name>.csv` (the numbers behind a figure) and give them to loggers with `log_table`."""
    if not trainer.is_global_zero:
        return None
    rows = [list(r) for r in rows]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    path = write_atomic(figures_dir(trainer) / f"{name}.csv", buf.getvalue())
    for logger in trainer.loggers:
        log_table = getattr(logger, "log_table", None)
        if callable(log_table):
            log_table(key=f"tables/{name}", columns=list(header), data=rows, step=trainer.global_step)
    return path


def save_text(trainer: L.Trainer, name: str, text: str) -> Path | None:
    """Save a short text summary (e.g. the most confused pairs) as `figures/<name>`; rank zero only."""
    if not trainer.is_global_zero:
        return None
    return write_atomic(figures_dir(trainer) / name, text)
