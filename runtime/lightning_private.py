"""Every private Lightning name litlab relies on, in one place, each with why.

A private name can change in any Lightning release without a deprecation; the rest of litlab uses only what this
module exposes. `tests/test_lightning_private.py` checks each name against the installed Lightning and fails with
"Lightning X no longer has ..." -- so raising the `lightning<2.7` bound in pyproject.toml is one test run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger


class CLIHooks(LightningCLI):
    """LightningCLI's private steps that litlab must wrap, handed to ordinary methods."""

    # `LightningCLI._parse_ckpt_path`: reads a checkpoint's hyperparameters (torch.load) while parsing, before any
    # public hook; litlab checks the file first and turns a safe-loading refusal into one `litlab:` line.
    def _parse_ckpt_path(self) -> None:
        self.parse_ckpt_path(super()._parse_ckpt_path)

    def parse_ckpt_path(self, parse: Callable[[], None]) -> None:
        parse()

    # `LightningCLI._set_seed`: seeds from `seed_everything` right after parsing, before any public hook; litlab
    # checks the value first (numpy takes [0, 2**32) and would fail with a traceback).
    def _set_seed(self) -> None:
        self.set_seed(super()._set_seed)

    def set_seed(self, seed_everything: Callable[[], None]) -> None:
        seed_everything()

    # `LightningCLI._add_subcommands` and jsonargparse's `_subcommands_action._choices_actions`: the help line of
    # each subcommand in `litlab --help`, which LightningCLI takes from the Trainer method's docstring.
    def _add_subcommands(self, parser, **kwargs) -> None:
        super()._add_subcommands(parser, **kwargs)
        for choice in parser._subcommands_action._choices_actions:
            choice.help = self.subcommand_help(choice.dest, choice.help)

    def subcommand_help(self, subcommand: str, help: str) -> str:
        return help

    # `LightningCLI._prepare_subcommand_parser` and `_subcommand_method_arguments`: the one place a subcommand's
    # own parser (with the Trainer method's arguments, e.g. `verbose`) exists before parsing, to change a default.
    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        self.prepare_subcommand_parser(parser, subcommand, self._subcommand_method_arguments[subcommand])
        return parser

    def prepare_subcommand_parser(self, parser, subcommand: str, arguments) -> None:
        pass


class LastCheckpointHooks(ModelCheckpoint):
    """ModelCheckpoint's private `last.ckpt` writer, under litlab's control of *when* it runs."""

    # `ModelCheckpoint._save_last_checkpoint`: writes `last.ckpt` (name, version counter, link or copy); Lightning
    # calls it after every top-k save, and litlab wants `last` at its own clean points instead (resume exactness).
    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if self.lightning_may_save_last(trainer):
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def lightning_may_save_last(self, trainer: L.Trainer) -> bool:
        return True

    def save_last_checkpoint(self, trainer: L.Trainer) -> None:
        # `_monitor_candidates`: the metrics dict the writer formats file names with.
        ModelCheckpoint._save_last_checkpoint(self, trainer, self._monitor_candidates(trainer))


# `trainer.fit_loop.epoch_loop.batch_progress`: the training loop's own count of this epoch's batches. `last.ckpt`
# is written after an epoch's first batch (not after its last), and the data order resumes mid-epoch, from it;
# the public `trainer.global_step` counts optimizer steps across epochs and knows no epoch boundary.
def batches_processed(trainer: L.Trainer) -> int:
    """Batches of the current training epoch processed so far (restored from a mid-epoch checkpoint)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def batches_processed_in_run(trainer: L.Trainer) -> int:
    """Training batches processed over the whole run, resumes included (callbacks.StepMetrics' log steps)."""
    return trainer.fit_loop.epoch_loop.batch_progress.total.processed


def on_last_batch(trainer: L.Trainer) -> bool:
    """Whether the batch just trained is the epoch's last."""
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


# `LightningModule._current_fx_name`: Lightning sets it twice around every hook call (~25 times a step);
# `Classifier` stores it as a plain attribute to skip nn.Module.__setattr__'s dict scans (docs/performance.md).
CURRENT_FX_NAME = "_current_fx_name"


def precompute_signature(method: Callable) -> None:
    """Lightning checks `training_step`'s signature with `inspect.signature` at every step
    (`is_param_in_hook_signature`, to pass `batch_idx` or not); a precomputed `__signature__` makes that ~6x
    cheaper. Relies on that helper reading the signature through `inspect.signature`."""
    method.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]


def csv_metrics_file(logger: CSVLogger) -> Path:
    """The CSV logger's open `metrics.csv` (its private `_ExperimentWriter.metrics_file_path`)."""
    return Path(logger.experiment.metrics_file_path)


def add_csv_columns(logger: CSVLogger, keys: list[str]) -> None:
    """Tell the CSV writer (its `metrics_keys`) about columns of rows written back into `metrics.csv` on resume,
    so its next write keeps them; otherwise it rewrites the header without them."""
    experiment = logger.experiment
    experiment.metrics_keys = sorted(set(experiment.metrics_keys) | set(keys))
