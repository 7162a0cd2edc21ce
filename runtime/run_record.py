"""The run record, `<run dir>/results.json`: how a run ended and its final metrics. This module is its one owner
(schema, atomic write, read, the sweep runner's `killed` marking); `RunRecord`, a callback the CLI always adds,
fills it through Lightning's public hooks, so a plain `Trainer(callbacks=[RunRecord()])` records the same file.

Statuses and the keys each carries (every record also has the metrics logged so far, `{"val/acc": ...}`):
- `running`     `epochs`, `global_step`: fit started; a run killed outright (SIGKILL, out of memory) stays so.
- `finished`    + `fit_seconds`, `best_checkpoint` (if any), then `test/*` once the test after fit ends.
- `requeued`    as finished, but SLURM's requeue signal stopped the fit (an hpc checkpoint); the requeued job
                continues the run (runtime/requeue.py).
- `tested`      a test of a run directory with no fit record: `checkpoint` (the weights tested) + the test metrics.
- `interrupted` + `message`: Ctrl-C / SIGTERM (Lightning's graceful shutdown), or a fit stopped by the trainer.
- `diverged`    + `message`, `step`, `epoch`, `lr`, `loss`: DivergenceGuard stopped the run.
- `collapsed`   + `message` and CollapseGuard's report: the model's predictions collapsed to one class.
- `failed`      + `message`: any other exception. A failed resume instead puts its run directory back as it
                was (`protect`, runtime/rollback.py), results.json included.
- `killed`      + `message`: written by `litlab sweep` (`mark_killed`) for a run whose process died of a signal.
A new status goes into STATUSES (write refuses others) and, if it ends a run for good, into the sweep's DONE;
a guard that stops training raises a `TrainingStopped` (callbacks/training/divergence.py) naming its status.
"""

from __future__ import annotations

import json
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.training.divergence import TrainingStopped
from datamodules.errors import DataError
from runtime.files import run_dir, write_json_atomic
from runtime.ckpt_path import untrusted_message
from runtime.requeue import requeued
from runtime.rollback import RunSnapshot
from runtime.spawned import fit_progress

FILE = "results.json"
STATUSES = ("running", "finished", "requeued", "tested", "interrupted", "diverged", "collapsed", "failed", "killed")
# Bad input or data, known only once the run builds or reads them: their message is the whole story.
DOMAIN_ERRORS = (ValueError, DataError, FileNotFoundError)


def path(run: Path | str) -> Path:
    return Path(run) / FILE


def read(run: Path | str) -> dict[str, Any]:
    """A run directory's record, or {} when there is none or it is unreadable (the run crashed before writing)."""
    try:
        return json.loads(path(run).read_text())
    except (OSError, ValueError):
        return {}


def status(run: Path | str, missing: str = "missing") -> str:
    return str(read(run).get("status", missing))


def write(run: Path | str, record: dict[str, Any]) -> Path:
    """Write the record atomically (a reader never sees half a file)."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"run record status {record.get('status')!r} is not one of {', '.join(STATUSES)}.")
    return write_json_atomic(path(run), record)


def mark_killed(run: Path | str, signum: int) -> dict[str, Any]:
    """Record that the run's process died of signal `signum` (keeping what it had written); a sweep re-runs it."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    record = {**read(run), "status": "killed", "message": f"the run's process was killed by {name} (no results); "
                                                        "the next `litlab sweep` of this file runs it again"}
    write(run, record)
    return record


def metric_values(trainer: L.Trainer) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def ending(err: BaseException) -> dict[str, Any]:
    """The status, message and extra keys for a run that `err` ended."""
    if isinstance(err, TrainingStopped):  # DivergenceGuard's Diverged, CollapseGuard's Collapsed
        return {"status": err.status, "message": str(err), **err.report}
    if isinstance(err, (*DOMAIN_ERRORS, OSError)):  # OSError: a write failed (disk full, file-size limit, ...)
        return {"status": "failed", "message": str(err)}
    if isinstance(err, pickle.UnpicklingError):
        return {"status": "failed", "message": untrusted_message(err)}
    if isinstance(err, SIGTERMException):  # Lightning stopped gracefully; last.ckpt is saved
        return {"status": "interrupted", "message": "SIGTERM"}
    # Ctrl-C: Lightning shuts down gracefully and exits (SystemExit); anything else is a bug.
    interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
    return {"status": "interrupted" if interrupted else "failed", "message": f"{type(err).__name__}: {err}"}


class RunRecord(L.Callback):
    """Writes `results.json` into the run directory at fit start, fit end, test end and on any exception."""

    def __init__(self) -> None:
        self._t0, self._started = 0.0, 0.0
        self._fit: dict[str, Any] | None = None  # this process's fit record: a test after it adds test/*
        self._snapshot: RunSnapshot | None = None

    def protect(self, snapshot: RunSnapshot | None) -> None:
        """A resume's copy of its run directory: a failure puts it back (instead of recording `failed`)."""
        self._snapshot = snapshot

    def release(self) -> None:
        """The resume went through: drop the copy."""
        if self._snapshot is not None:
            self._snapshot.discard()
        self._snapshot = None

    def _progress(self, trainer: L.Trainer) -> dict[str, Any]:
        return {"epochs": trainer.current_epoch, "global_step": trainer.global_step, **metric_values(trainer)}

    def _write(self, trainer: L.Trainer, record: dict[str, Any]) -> None:
        if trainer.is_global_zero:
            write(run_dir(trainer), record)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._started, self._fit = time.perf_counter(), time.time(), None
        self._write(trainer, {"status": "running", **self._progress(trainer)})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs, global_step = fit_progress(trainer)
        status = "interrupted" if trainer.interrupted else "requeued" if requeued(trainer, self._started) else "finished"
        record = {"status": status, "fit_seconds": round(time.perf_counter() - self._t0, 3),
                  **self._progress(trainer), "epochs": epochs, "global_step": global_step}
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_path:
            record["best_checkpoint"] = ckpt.best_model_path
        self._fit = record
        self._write(trainer, record)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = metric_values(trainer)
        # The test after fit: the fit's record gains the test metrics. Under ddp_spawn the fit ran in other
        # processes, so its record is the one on disk (finished, not tested yet).
        fit = self._fit
        if fit is None and trainer.is_global_zero:
            on_disk = read(run_dir(trainer))
            fit = on_disk if on_disk.get("status") == "finished" and not any(k.startswith("test/") for k in on_disk) \
                else None
        if fit is not None:
            fit.update({k: v for k, v in metrics.items() if k.startswith("test/")})
            self._write(trainer, fit)
        else:  # which weights were tested: the resolved ckpt_path (None: the model as built)
            self._write(trainer, {"status": "tested", "checkpoint": trainer.ckpt_path, **metrics})

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        record = {**self._progress(trainer), **ending(exception)}
        if record["status"] == "failed" and self._snapshot is not None:
            snapshot, self._snapshot = self._snapshot, None
            snapshot.restore()  # a failed resume leaves its run as it was, results.json included
            return
        try:
            self._write(trainer, record)
        except OSError:  # recording a failure that is itself a write failure: the exception still goes out
            if record["status"] != "failed":
                raise
