"""What the CLI's own process re-reads after a strategy that trains in spawned processes (`ddp_spawn`).

Under `ddp_spawn` the process that runs the CLI only launches the workers; Lightning hands back the weights, the
best checkpoint's path and `callback_metrics`, but not the loops' progress (its `current_epoch` and
`global_step` stay 0), and its CSV logger never saw the rows rank zero wrote. Both are read back from what rank
zero left on disk: the final `last.ckpt` (written at train end) and the header of `metrics.csv`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from runtime.lightning_private import add_csv_columns, csv_metrics_file


def fit_progress(trainer: L.Trainer) -> tuple[int, int]:
    """(epochs, global_step) of the fit that just ended, wherever its loops ran."""
    epochs, step = trainer.current_epoch, trainer.global_step
    ckpt = trainer.checkpoint_callback
    # The checkpoint folder is resolved in the workers' setup; here only the best checkpoint's path came back.
    best = getattr(ckpt, "best_model_path", None)
    folder = getattr(ckpt, "dirpath", None) or (Path(best).parent if best else None)
    last = Path(folder) / "last.ckpt" if step == 0 and folder else None
    if last is not None and last.is_file():  # this process did not train; rank zero's final checkpoint says how far
        saved = torch.load(last, weights_only=True, map_location="cpu", mmap=True)
        epochs, step = int(saved["epoch"]), int(saved["global_step"])
    return epochs, step


def sync_csv_loggers(trainer: L.Trainer) -> None:
    """Give this process's CSV writers the columns already in `metrics.csv`, so the rows they add (test after fit)
    extend the file instead of failing on (and truncating) the fit's rows ("dict contains fields not in
    fieldnames")."""
    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger) or not trainer.is_global_zero:
            continue
        path = csv_metrics_file(logger)
        if path.is_file():
            with open(path, newline="") as f:
                add_csv_columns(logger, next(csv.reader(f), []))
