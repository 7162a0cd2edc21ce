"""An analysis callback's outputs: figures, tables and text in `<run dir>/figures/`, on rank zero, handed to every
logger.

Every analysis callback goes through `save_figure` / `save_table` / `save_text`, so there is one place that
knows where files go (`<run dir>/figures/`), how they are written (temporary name, then rename: a crash never
leaves half a file) and how loggers receive them (`log_image` where a logger has it, e.g. W&B; the CSV logger
has nothing to receive a picture, so the file in the run directory is the record).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")  # no display on training machines; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from runtime.files import run_dir, write_atomic


def figures_dir(trainer: L.Trainer) -> Path:
    path = run_dir(trainer) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


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
