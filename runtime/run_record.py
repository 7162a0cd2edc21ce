"""The run record, `<run dir>/results.json`: how a run ended and its final metrics. This module is its one owner
(schema, atomic write, read, the sweep runner's `killed` marking); `RunRecord`, a callback the CLI always adds,
fills it through Lightning's public hooks, so a plain `Trainer(callbacks=[RunRecord()])` records the same file.

Statuses and the keys each carries (every record also has the metrics logged so far, `{"val/acc": ...}`):
- `running`     `epochs`, `global_step`: fit started; a run killed outright (SIGKILL, out of memory) stays so.
- `finished`    + `fit_seconds`, `best_checkpoint` (if any), then `test/*` once the test after fit ends.
- `tested`      a `trainer.test` with no fit before it in this process: the test metrics.
- `interrupted` + `message`: Ctrl-C / SIGTERM (Lightning's graceful shutdown), or a fit stopped by the trainer.
- `diverged`    + `message`, `step`, `epoch`, `lr`, `loss`: DivergenceGuard stopped the run.
- `failed`      + `message`: any other exception.
- `killed`      + `message`: written by `litlab sweep` (`mark_killed`) for a run whose process died of a signal.
A new status goes into STATUSES (write refuses others) and, if it ends a run for good, into the sweep's DONE.
"""

from __future__ import annotations

import json
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L

from datamodules.errors import DataError
from runtime.files import run_dir, write_json_atomic

FILE = "results.json"
STATUSES = ("running", "finished", "tested", "interrupted", "diverged", "failed", "killed")
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


def untrusted_message(err: BaseException) -> str:
    lines = [line.split(" Please use")[0].strip(" .") for line in str(err).splitlines() if "Unsupported global" in line]
    return ("the checkpoint holds Python objects that safe loading (torch.load with weights_only=True) refuses"
            f"{' (' + lines[0][:200] + ')' if lines else ''}. Load it only if you trust where it came from: "
            "--weights_only false.")


def ending(err: BaseException) -> dict[str, Any]:
    """The status, message and extra keys for a run that `err` ended."""
    if getattr(err, "run_status", None) in STATUSES:  # e.g. Diverged: "diverged" with its report
        return {"status": err.run_status, "message": str(err), **getattr(err, "report", {})}
    if isinstance(err, DOMAIN_ERRORS):
        return {"status": "failed", "message": str(err)}
    if isinstance(err, pickle.UnpicklingError):
        return {"status": "failed", "message": untrusted_message(err)}
    # Ctrl-C / SIGTERM: Lightning shuts down gracefully and exits (SystemExit); anything else is a bug.
    interrupted = isinstance(err, (KeyboardInterrupt, SystemExit)) or type(err).__name__ == "SIGTERMException"
    return {"status": "interrupted" if interrupted else "failed", "message": f"{type(err).__name__}: {err}"}


class RunRecord(L.Callback):
    """Writes `results.json` into the run directory at fit start, fit end, test end and on any exception."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._fit: dict[str, Any] | None = None  # this process's fit record: a test after it adds test/*

    def _progress(self, trainer: L.Trainer) -> dict[str, Any]:
        return {"epochs": trainer.current_epoch, "global_step": trainer.global_step, **metric_values(trainer)}

    def _write(self, trainer: L.Trainer, record: dict[str, Any]) -> None:
        if trainer.is_global_zero:
            write(run_dir(trainer), record)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._fit = time.perf_counter(), None
        self._write(trainer, {"status": "running", **self._progress(trainer)})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {"status": "interrupted" if trainer.interrupted else "finished",
                  "fit_seconds": round(time.perf_counter() - self._t0, 3), **self._progress(trainer)}
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_path:
            record["best_checkpoint"] = ckpt.best_model_path
        self._fit = record
        self._write(trainer, record)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = metric_values(trainer)
        if self._fit is not None:  # the test after fit: the fit's record gains the test metrics
            self._fit.update({k: v for k, v in metrics.items() if k.startswith("test/")})
            self._write(trainer, self._fit)
        else:
            self._write(trainer, {"status": "tested", **metrics})

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._write(trainer, {**self._progress(trainer), **ending(exception)})
