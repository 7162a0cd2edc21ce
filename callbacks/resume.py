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
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from callbacks.artifacts import write_atomic


class LitlabCheckpoint(ModelCheckpoint):
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
        self._saving_last = False
        self._last_step_saved_as_last = -1
        self._rng_to_restore: dict[str, Any] | None = None
        self._old_metrics: dict[str, str] = {}  # CSV logger's metrics.csv path -> its text before the resume

    # -- when `last` is written -----------------------------------------------------------------------------
    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if self._saving_last:  # only our own triggers write `last`; top-k saves no longer drag it along
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def write_last(self, trainer: L.Trainer) -> None:
        """Write `last.ckpt` now, unless it already holds this step or the run is unfit to resume from."""
        if (not self.save_last or trainer.fast_dev_run or trainer.sanity_checking
                or self._last_step_saved_as_last == trainer.global_step or _diverged(trainer)):
            return
        for logger in trainer.loggers:  # every row the checkpoint has seen is on disk before it
            logger.save()
        self._saving_last = True
        try:
            super()._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            self._saving_last = False
        self._last_step_saved_as_last = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch:  # a save here would resume past the epoch's validation and epoch-end hooks
            return
        n = self.save_last_every_n_steps
        if progress.current.processed == 1 or (n and trainer.global_step % n == 0):
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
    experiment = logger.experiment  # the writer that deleted the file; it appends to what we write back
    write_atomic(Path(experiment.metrics_file_path), buf.getvalue())
    experiment.metrics_keys = sorted(set(experiment.metrics_keys) | set(header))


def _diverged(trainer: L.Trainer) -> bool:
    return any(getattr(cb, "diverged", False) for cb in trainer.callbacks)


def resolve_checkpoint(cfg: Any, which: str) -> str:
    """`--ckpt_path last|best` in a new process, for fit, validate, test and predict alike: this experiment's
    newest run (the newest `last.ckpt` among its run directories), and its `last.ckpt` or its best checkpoint.
    (Lightning's own `last`/`best` mean the checkpoints of the trainer's current fit, which a new process lacks:
    `test --ckpt_path last` would test an untrained model.)"""
    root = experiment_root(cfg)
    found = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"--ckpt_path {which}: no last.ckpt under {root}/*/checkpoints/. Give the checkpoint's path instead, "
            "or check trainer.logger's save_dir and name (they locate this experiment's runs)."
        )
    last = found[-1]
    if which == "last":
        return str(last)
    # The best checkpoint is the one the run's checkpoint callback tracked; its state is saved in `last.ckpt`.
    states = torch.load(last, weights_only=True, map_location="cpu").get("callbacks", {})
    best = next((s.get("best_model_path") for k, s in states.items() if k.startswith(LitlabCheckpoint.__name__)), "")
    for candidate in (Path(best), last.parent / Path(best).name) if best else ():
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"--ckpt_path best: the newest run, {last.parent.parent}, has no best checkpoint (its checkpoint callback "
        f"recorded {best or 'none'}). Give a checkpoint's path, or --ckpt_path last."
    )


def _first_logger(cfg: Any) -> Any:
    logger = cfg.trainer.logger
    return logger[0] if isinstance(logger, list) and logger else logger


def experiment_root(cfg: Any) -> Path:
    init = getattr(_first_logger(cfg), "init_args", None)
    return Path(getattr(init, "save_dir", None) or cfg.trainer.default_root_dir or ".") / str(
        getattr(init, "name", None) or "lightning_logs")


def resume_in_same_directory(cfg: Any, ckpt_path: str) -> None:
    """If `ckpt_path` is `<root>/<version>/checkpoints/*.ckpt` of this experiment and the first logger (CSV or
    TensorBoard) has no version set, log into that version again, so the run keeps one directory."""
    logger = _first_logger(cfg)
    init = getattr(logger, "init_args", None)
    if init is None or "version" not in init or init.version is not None:
        return
    ckpt = Path(ckpt_path).resolve()
    if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.parent == experiment_root(cfg).resolve():
        version = ckpt.parent.parent.name
        init.version = int(version[8:]) if version.startswith("version_") and version[8:].isdigit() else version
