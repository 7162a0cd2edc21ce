"""Exact resume: `last.ckpt` saved often and at clean points, RNG states, and the run's metrics history kept.

Lightning already restores the model, optimiser, LR schedulers, the loops' progress (epoch, batch, global step)
and every callback's `state_dict` (early stopping's patience, the best checkpoint's score). What it leaves to
us, and `LitlabCheckpoint` adds:

- `last.ckpt` is written after the first step of every epoch, every `save_last_every_n_steps` steps and at
  train end, whatever top-k does (Lightning 2.6's `save_last=True` only refreshes `last` when a top-k save
  happens at the same step, so on a plateau `last` stays at the best epoch and a resume repeats epochs).
  Why not at the epoch's end: Lightning's loops resume exactly from a checkpoint taken in `on_train_batch_end`
  (mid-epoch), while one taken between epochs (validation, epoch-end hooks, the LR step) resumes with stale
  batch progress, lost epoch-end metrics or a skipped LR step. After the first step of the next epoch all of
  that is done and logged, so a kill loses at most one epoch plus a step.
- the torch / numpy / python RNG states, restored just before the first resumed batch (dropout, random
  weighting draws);
- where the data order stands mid-epoch: `TensorBatches.state_dict` (datamodules/base.py), which Lightning
  saves with the fit loop and hands back before the first resumed batch;
- `metrics.csv`: the CSV logger deletes it when a run directory is reused; the CLI resumes into the same
  version directory, and the rows logged before the checkpoint are written back (`keep_metrics_history`).

Loggers are flushed before each `last` save, so every row the checkpoint has seen is on disk.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from runtime.files import write_atomic
from runtime.lightning_private import (LastCheckpointHooks, add_csv_columns, batches_processed, csv_metrics_file,
                                      on_last_batch)


class LitlabCheckpoint(LastCheckpointHooks):
    """ModelCheckpoint whose `last.ckpt` makes a killed run resume exactly (see the module docstring)."""

    def __init__(self, *args: Any, save_last_every_n_steps: int = 0, **kwargs: Any) -> None:
        """
        Args:
            save_last_every_n_steps: Also write `last.ckpt` every this many training steps (0: only after the
                first step of each epoch, so a kill loses at most about one epoch). Writing costs roughly the checkpoint's size in
                disk bandwidth, so keep it to a save every few seconds of training.
        """
        kwargs.setdefault("save_on_train_epoch_end", True)  # top-k after the module's epoch-end logging
        super().__init__(*args, **kwargs)
        if save_last_every_n_steps < 0:
            raise ValueError(f"save_last_every_n_steps must be >= 0, got {save_last_every_n_steps}.")
        self.save_last_every_n_steps = save_last_every_n_steps
        self._last_step_saved_as_last = -1
        self._rng_to_restore: dict[str, Any] | None = None
        self._old_metrics: dict[str, str] = {}  # CSV logger's metrics.csv path -> its text before the resume

    # -- when `last` is written -----------------------------------------------------------------------------
    def lightning_may_save_last(self, trainer: L.Trainer) -> bool:
        return False  # only our own triggers write `last`; top-k saves no longer drag it along

    def write_last(self, trainer: L.Trainer) -> None:
        """Write `last.ckpt` now, unless it already holds this step or the run is unfit to resume from."""
        if (not self.save_last or trainer.fast_dev_run or trainer.sanity_checking
                or self._last_step_saved_as_last == trainer.global_step or _diverged(trainer)):
            return
        for logger in trainer.loggers:  # every row the checkpoint has seen is on disk before it
            logger.save()
        self.save_last_checkpoint(trainer)
        self._last_step_saved_as_last = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if on_last_batch(trainer):  # a save here would resume past the epoch's validation and epoch-end hooks
            return
        n = self.save_last_every_n_steps
        if batches_processed(trainer) == 1 or (n and trainer.global_step % n == 0):
            self.write_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.write_last(trainer)

    # -- RNG states -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Plain tensors, ints and tuples only, so the checkpoint still loads with torch.load(weights_only=True).
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
        return {**super().state_dict(), "rng": {
            "torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate(),
            **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
        }}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._rng_to_restore = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Restored here, after the sanity check and just before the first batch, as the saved states were taken.
        self._last_step_saved_as_last = trainer.global_step  # a resumed run's `last` already holds this step
        rng, self._rng_to_restore = self._rng_to_restore, None
        if rng:
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    # -- metrics history ------------------------------------------------------------------------------------
    def keep_metrics_history(self, trainer: L.Trainer) -> None:
        """Call before `fit(ckpt_path=...)`: remember the CSV loggers' metrics.csv (Lightning deletes it when
        it opens an existing run directory); `on_load_checkpoint` writes back the rows older than the checkpoint."""
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                path = Path(logger.log_dir) / "metrics.csv"
                if path.is_file():
                    self._old_metrics[str(path)] = path.read_text()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        old, self._old_metrics = self._old_metrics, {}
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            text = old.get(str(Path(logger.log_dir) / "metrics.csv")) if isinstance(logger, CSVLogger) else None
            if text:
                _restore_rows(logger, text, epoch=checkpoint.get("epoch", 0), step=checkpoint.get("global_step", 0))


def _restore_rows(logger: CSVLogger, text: str, epoch: int, step: int) -> None:
    # Rows of epochs before the checkpoint's were logged before it; later ones the resumed run logs again.
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    rows = [r for r in reader
            if (int(float(r["epoch"])) < epoch if r.get("epoch") not in (None, "") else int(float(r["step"])) < step)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(csv_metrics_file(logger), buf.getvalue())  # the writer that deleted it appends to this
    add_csv_columns(logger, header)


def _diverged(trainer: L.Trainer) -> bool:
    return any(getattr(cb, "diverged", False) for cb in trainer.callbacks)
