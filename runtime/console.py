"""What a run prints: a line per epoch where a progress bar cannot redraw (stdout piped to a file, a cluster log),
a few closing lines at the end of fit and test, and none of the library notices that are not about this run.
Per-class metrics stay in results.json and the figures' files, not on the console.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from runtime import run_record

# Harmless notices, filtered by message (each says why it is harmless here):
NOISE = (
    # Lightning's own pytree helper calls a torch API that torch deprecated; nothing a user can change.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # litlab logs epoch metrics (on_epoch), so a per-step logging interval longer than an epoch loses nothing.
    r"The number of training batches \(\d+\) is smaller than the logging interval.*",
    # litlab's data modules serve batches from in-memory tensors (datamodules/base.py): workers would only add
    # inter-process copies.
    r".*does not have many workers.*",
)
ADVERTS = ("💡 Tip:",)  # Lightning's start-up advertisement for its cloud logger: not about this run


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(ADVERTS)


def quiet_known_noise() -> None:
    """Install the filters above (idempotent: warnings and logging de-duplicate them)."""
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())


def fmt(value: float) -> str:
    """Four significant digits: 0.9309999942779541 -> 0.931, 0.21371175 -> 0.2137, 1234.5 -> 1234."""
    return f"{value:.4g}"


def scalars(metrics: dict[str, Any], prefixes: tuple[str, ...]) -> str:
    """`name value` pairs of the scalar metrics under `prefixes`, leaving out per-class ones (`val/recall/3`)."""
    # None: a non-finite value, as results.json stores it (runtime/files.py), printed as nan.
    pairs = [(k, float("nan") if v is None else float(v)) for k, v in metrics.items()
             if k.startswith(prefixes) and k.count("/") == 1 and getattr(v, "numel", lambda: 1)() == 1]
    return "  ".join(f"{k} {fmt(v)}" for k, v in sorted(pairs))


class EpochLines(Callback):
    """One line per training epoch (the progress bar's stand-in when stdout is not a terminal). The module logs
    its epoch's train/* metrics after the callbacks' `on_train_epoch_end`, so the line is printed when they are
    there: as the next epoch starts, or when training ends."""

    _pending: tuple[int, float] | None = None  # (epoch number, seconds) of the epoch waiting for its line

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = (trainer.current_epoch + 1, time.perf_counter() - self._t0)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer)

    @rank_zero_only
    def _print(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        (epoch, seconds), self._pending = self._pending, None
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        metrics = {k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_best")}
        print(f"epoch {epoch}{total}  {scalars(metrics, ('train/', 'val/'))}  ({seconds:.1f} s)", flush=True)


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summary(run: Path, results: dict[str, Any], tested: str | None) -> str:
    """The closing lines of `fit` or `test`: where the run is, its rounded final and best metrics, the checkpoint
    tested and the figures written."""
    lines = [f"Run directory: {_rel(run)}"]
    if "epochs" in results and results.get("status") != "tested":
        lines.append(f"  final (epoch {results['epochs']}, {fmt(results.get('fit_seconds', 0))} s): "
                     f"{scalars(results, ('train/', 'val/'))}")
    if "val/acc_best" in results:
        lines.append(f"  best: val/acc {fmt(results['val/acc_best'])}"
                     + (f" ({_rel(results['best_checkpoint'])})" if results.get("best_checkpoint") else ""))
    if test := scalars(results, ("test/",)):
        lines.append(f"  test{' of ' + _rel(tested) if tested else ''}: {test}")
    figures = sorted((run / "figures").glob("*.png"))
    if figures:
        names = ", ".join(p.name for p in figures[:4]) + (f", … ({len(figures)} in all)" if len(figures) > 4 else "")
        lines.append(f"  figures in {_rel(run / 'figures')}/: {names}")
    lines.append(f"  every metric (per class too): {_rel(run_record.path(run))}, {_rel(run / 'metrics.csv')}")
    return "\n".join(lines)
