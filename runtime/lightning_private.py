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


# `_call_callback_hooks` and `_call_lightning_module_hook` (lightning/pytorch/trainer/call.py) run a hook only
# `if callable(fn)`. Each hook they run costs 6-10 Python calls (a profiler context, `state_key`,
# `trainer.lightning_module`, `_current_fx_name` twice) even when it is the inherited no-op: 6 per-batch hooks a
# training step, for every callback and the module -- the largest per-step cost litlab itself can remove. Only
# per-batch hooks that return nothing Lightning uses and that Lightning reaches only through those two functions:
# it calls `on_save_checkpoint`/`on_load_checkpoint` directly, the batch-transfer hooks return the batch, and the
# evaluation loops read the signatures of the module's (not the callbacks') evaluation batch hooks.
TRAIN_BATCH_HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
                     "on_before_zero_grad", "on_train_batch_end")
BATCH_HOOKS = (*TRAIN_BATCH_HOOKS, "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start",
               "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end")


def skip_no_op_batch_hooks(obj: L.Callback | L.LightningModule) -> list[str]:
    """Mark each per-batch hook (`BATCH_HOOKS` of a callback, `TRAIN_BATCH_HOOKS` of a module) that `obj` only
    inherits from `Callback` / `LightningModule` (a no-op) as absent -- None on the instance, so its class and
    subclasses' `super()` calls are untouched -- for Lightning to skip; returns their names. Every hook the object's
    class defines still runs at every batch, and assigning a hook to the instance later replaces the None."""
    module = isinstance(obj, L.LightningModule)
    base = L.LightningModule if module else L.Callback
    skipped = []
    for name in TRAIN_BATCH_HOOKS if module else BATCH_HOOKS:
        if name not in vars(obj) and getattr(type(obj), name, None) is getattr(base, name):
            setattr(obj, name, None)
            skipped.append(name)
    return skipped
