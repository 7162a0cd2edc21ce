"""litlab's command line: LightningCLI with litlab's links, checkpointing and run-directory outputs.

    litlab fit --config configs/base.yaml --config configs/quickstart.yaml
    litlab test --config configs/base.yaml --config configs/quickstart.yaml --ckpt_path runs/.../best.ckpt
    litlab sweep configs/sweeps/mlp_layers.yaml --seeds 3      # experiments/sweep.py
    litlab report runs/sweeps/mlp_layers                        # experiments/report.py
    litlab predict ... --ckpt_path best.ckpt --data.predict_path my_digits/   # callbacks/predictions.py
    litlab export --ckpt_path best.ckpt --format onnx           # experiments/export.py

Every run writes into one run directory (the first logger's `log_dir`, `runs/<name>/version_<n>/` by default):
the resolved `config.yaml`, `metrics.csv`, `checkpoints/`, `figures/` and `results.json`.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.predictions import PredictionsCSV
from callbacks.training.accelerate import cpu_has_bf16
from callbacks.training.checkpoint import LitlabCheckpoint
from callbacks.training.collapse import CollapseGuard
from callbacks.training.divergence import DivergenceGuard, TrainingStopped
from callbacks.training.step_metrics import StepMetrics
from cli_messages import LitlabParser, help_without_class
from datamodules.errors import DataError
from runtime.console import EpochLines, quiet_known_noise, summary
from experiments.agent import add_sweep_logger, none_to_null
from lit_models.checkpointing import CheckpointError, CheckpointMismatch
from runtime import run_record
from runtime.checkpoint_io import AtomicCheckpointIO, remove_dead_temporaries
from runtime.ckpt_path import changed_settings, model_settings, refuse_changed_resume, untrusted_message, vet_ckpt_path
from runtime.config_paths import resolve_configs
from runtime.files import run_dir
from runtime.lightning_private import CLIHooks, skip_no_op_batch_hooks
from runtime.logger_config import first_save_dir
from runtime.profiler import NullProfiler
from runtime.requeue import requeued, resume_requeued
from runtime.resume import experiment_root, resume_in_same_directory
from runtime.rollback import RunSnapshot
from runtime.run_record import DOMAIN_ERRORS, RunRecord
from runtime.spawned import sync_csv_loggers
from runtime.wandb_run import WandbConfig, configure_wandb, finish_wandb


def unique_callbacks(callbacks: list | None) -> list | None:
    """Every config adds its callbacks with `trainer.callbacks+:` (appended in config order), so stacking
    overlays never drops an experiment's own; an entry listed twice with the same arguments (two configs that
    both want LearningCurves) runs once. A plain `trainer.callbacks:` replaces the list on purpose."""
    if not callbacks:
        return callbacks
    return [c for i, c in enumerate(callbacks) if c not in callbacks[:i]]


def clear_message(err: BaseException) -> str:
    """`litlab: <the message that matters>` on one line. jsonargparse wraps an error raised while building a class
    in "Does not validate against any of the subtypes ...": its cause is the message that matters. Where litlab
    wrapped a library's error in its own (a DataError naming the file), litlab's is the one to print."""
    chain = [err]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 50:
        chain.append(cause)
    own = [e for e in chain if isinstance(e, (DataError, CheckpointError, CheckpointMismatch))]
    domain = [e for e in chain if isinstance(e, DOMAIN_ERRORS)]
    inner = own[0] if own else domain[-1] if domain else err
    return "litlab: " + " ".join(str(inner).split())


class LitlabCLI(CLIHooks):
    """LightningCLI plus: data→model links, best/last checkpoints, test after fit, and `results.json`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Every litlab LightningModule takes these two, so configs never repeat what the data defines.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        # Checkpointing is always on and configured under its own key, so `trainer.callbacks` in a config
        # only lists extra callbacks and cannot drop it by accident.
        # LitlabCheckpoint also writes `last.ckpt` at every epoch boundary (and every N steps) for exact resume.
        parser.add_lightning_class_args(LitlabCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/acc",
            "checkpoint.mode": "max",
            "checkpoint.filename": "best",
            "checkpoint.save_last": True,
            "checkpoint.save_on_train_epoch_end": True,
        })
        parser.add_lightning_class_args(DivergenceGuard, "divergence")  # on by default; --divergence.enabled false
        parser.add_lightning_class_args(StepMetrics, "step_metrics")  # lr, train/loss_step every log_every_n_steps
        parser.add_lightning_class_args(CollapseGuard, "collapse")  # on by default; --collapse.enabled false
        # How every run ends, in results.json (runtime/run_record.py): always on, like checkpointing.
        parser.add_lightning_class_args(RunRecord, "run_record")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="fit only: test the best checkpoint when training ends (results.json gets test/*)")

    def subcommand_help(self, subcommand: str, help: str) -> str:
        # LightningCLI lists each subcommand with the first line of the Trainer method's docstring, which can stop
        # mid-sentence ("... over the test set. It's"): whole sentences instead.
        return SUBCOMMAND_HELP.get(subcommand, help)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        LitlabParser.litlab_args = list(sys.argv[1:] if args is None else args)  # what its errors diagnose
        super().parse_arguments(parser, args)

    def prepare_subcommand_parser(self, parser: LightningArgumentParser, subcommand: str, arguments: Any) -> None:
        if "verbose" in arguments:
            parser.set_defaults(verbose=False)  # no table of every per-class metric: litlab prints a summary

    def parse_ckpt_path(self, parse: Callable[[], None]) -> None:
        # LightningCLI reads the checkpoint's hyperparameters (torch.load, weights_only=True) while parsing, and
        # importing the classes they name runs code: `last`/`best` are resolved and the file is vetted first.
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else None
        ckpt = cfg.get("ckpt_path") if cfg is not None else None
        if not ckpt or "://" in str(ckpt) or ckpt in ("hpc", "registry"):
            return parse()
        vet_ckpt_path(cfg)
        asked = model_settings(cfg.model.as_dict())
        parse()  # the checkpoint's hyperparameters replace the config's
        changed = changed_settings(asked, model_settings(self.config[sub].model.as_dict()))
        if changed and sub == "fit":
            raise refuse_changed_resume(cfg.ckpt_path, changed)
        if changed:
            rank_zero_warn(f"{sub} uses the model saved in {cfg.ckpt_path}, not the config's: {'; '.join(changed)}.")

    def set_seed(self, seed_everything: Callable[[], None]) -> None:
        # Lightning hands the seed to numpy, which takes [0, 2**32) and fails with a traceback otherwise.
        seed = self.config[self.config.subcommand].get("seed_everything") if self.config.get("subcommand") else None
        if type(seed) is int and not 0 <= seed < 2**32:
            raise SystemExit(f"litlab: seed_everything must be in [0, 2**32), got {seed}; or true (a random seed, "
                             "recorded in config.yaml) or false (no seeding).")
        seed_everything()

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.profiler) is PassThroughProfiler:  # none asked for: the cheaper no-op (docs/performance.md)
            trainer.profiler = NullProfiler()
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in trainer.callbacks):
            trainer.callbacks.append(PredictionsCSV())  # <run dir>/predictions.csv (callbacks/predictions.py)
        for callback in trainer.callbacks:  # Lightning skips the no-op per-batch hooks (docs/performance.md)
            skip_no_op_batch_hooks(callback)
        return trainer

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config)
        cfg.trainer.callbacks = unique_callbacks(cfg.trainer.callbacks)
        # A progress bar that redraws every 20 steps: Lightning's default redraws (and re-reads every metric)
        # each step, which costs more than a step of a small MLP. A bar listed in trainer.callbacks wins. Where
        # stdout is not a terminal (a file, a cluster log) a bar only writes long lines: a line per epoch instead.
        callbacks = cfg.trainer.callbacks or []
        has_bar = any("ProgressBar" in str(getattr(c, "class_path", c)) for c in callbacks)
        if cfg.trainer.enable_progress_bar is None and not has_bar and not sys.stdout.isatty():
            cfg.trainer.enable_progress_bar = False
            self.trainer_defaults["callbacks"] = [EpochLines()]
        elif cfg.trainer.enable_progress_bar is not False and not has_bar:
            self.trainer_defaults["callbacks"] = [TQDMProgressBar(refresh_rate=20)]
        if cfg.trainer.enable_model_summary is None:
            cfg.trainer.enable_model_summary = False  # a table with a row per metric object; fit prints one line
        # bf16 autocast (configs/gpu.yaml, fast_cnn_cifar10.yaml) is a speed-up on a GPU and on a CPU with native bf16
        # (AVX-512 BF16 / AMX: ~3x on small conv nets); elsewhere it only emulates bf16 slowly, so train in 32-true.
        bf16 = str(cfg.trainer.precision).startswith("bf16")
        if bf16 and cfg.trainer.accelerator == "auto" and not torch.cuda.is_available() and not cpu_has_bf16():
            rank_zero_warn(f"precision={cfg.trainer.precision} needs a GPU or a CPU with native bf16; neither found, "
                           "training in 32-true.")
            cfg.trainer.precision = "32-true"
        if self.subcommand == "fit" and not cfg.get("ckpt_path"):
            resume_requeued(cfg)  # a requeued SLURM job: its hpc checkpoint, its run directory (runtime/requeue.py)
        if self.subcommand == "fit" and cfg.get("ckpt_path"):
            resume_in_same_directory(cfg, cfg.ckpt_path)  # one run, one directory: metrics.csv keeps its rows
        if "weights_only" in cfg and cfg.weights_only is None:
            cfg.weights_only = True  # safe loading (tensors and plain types only); --weights_only false to trust a file
        add_sweep_logger(cfg)  # under `wandb agent`: log to the sweep (experiments/agent.py)
        configure_wandb(cfg)  # W&B run name/id/group/tags from the run directory (runtime/wandb_run.py)
        # W&B writes its files to the working directory unless told otherwise; keep them under the runs folder.
        if save_dir := first_save_dir(cfg):
            os.environ.setdefault("WANDB_DIR", save_dir)
            try:
                Path(save_dir).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SystemExit(f"litlab: cannot create the runs folder {save_dir} ({err.strerror}); point "
                                 "trainer.logger.init_args.save_dir at a writable folder.") from None

    # -- reliability: atomic checkpoints, statuses in results.json, clear errors (README: Reliability) -------
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except DOMAIN_ERRORS as err:
            raise SystemExit(clear_message(err)) from None
        skip_no_op_batch_hooks(self.model)  # as for the callbacks (instantiate_trainer)
        # config.yaml describes the run from its start, so `fit --config <run>/config.yaml` re-runs it even when
        # the run was resumed (resuming is `--ckpt_path last`, not part of the run's description).
        for cb in self.trainer.callbacks:
            if isinstance(cb, SaveConfigCallback) and cb.config.get("ckpt_path"):
                cb.config = cb.config.clone()
                cb.config.ckpt_path = None
        # Checkpoints are written to a temporary name and renamed: a kill mid-write never leaves a torn file.
        if type(self.trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO":
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def _snapshot_resumed_run(self) -> RunSnapshot | None:
        """A resume writes into the run it continues: copy that run aside first, so a failure can undo it."""
        run = run_dir(self.trainer)
        if not (self.config.fit.get("ckpt_path") and self.trainer.is_global_zero and run.is_dir()):
            return None
        snapshot = RunSnapshot(run)
        try:
            snapshot.take()
        except OSError as err:
            raise SystemExit(f"litlab: cannot resume into {run}: copying it aside first (so that a failed resume "
                             f"can put it back) failed: {err}. Free some space, then resume again.") from None
        return snapshot

    def _record(self) -> RunRecord:
        return next(c for c in self.trainer.callbacks if isinstance(c, RunRecord))

    # -- fit: test the best checkpoint (runtime/run_record.py's RunRecord writes results.json) -------------------
    def before_fit(self) -> None:
        self._record().protect(self._snapshot_resumed_run())  # before anything of a resumed run is written
        self._started = time.time()
        for folder in experiment_root(self.config.fit).glob("*/checkpoints"):  # writes killed in earlier runs
            remove_dead_temporaries(folder)
        ckpt = self.trainer.checkpoint_callback
        if self.config.fit.get("ckpt_path") and isinstance(ckpt, LitlabCheckpoint):
            ckpt.keep_metrics_history(self.trainer)  # before the CSV logger reopens (and empties) the run dir
        for logger in self.trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.experiment  # noqa: B018 -- open the run directory now (Lightning would in setup)
        if self.trainer.is_global_zero:
            net = getattr(self.model, "net", None)
            params = sum(p.numel() for p in self.model.parameters())
            print(f"Training {type(self.model).__name__}{f'({type(net).__name__})' if net else ''}, "
                  f"{params:,} parameters, on {type(self.datamodule).__name__}; run directory "
                  f"{run_dir(self.trainer)}", flush=True)

    def after_fit(self) -> None:
        # SLURM's requeue signal: Lightning saved an hpc checkpoint and stopped; the requeued job finishes the run.
        again = requeued(self.trainer, self._started)
        ckpt = self.trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt is not None else ""
        if self.config.fit.test_after_fit and not self.trainer.interrupted and not again:
            sync_csv_loggers(self.trainer)
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False, ckpt_path="best" if best else None)
        self._record().release()
        if self.trainer.is_global_zero:
            record = run_record.read(run_dir(self.trainer))
            tested = record.get("best_checkpoint") if any(k.startswith("test/") for k in record) else None
            print(summary(run_dir(self.trainer), record, tested), flush=True)

    def after_test(self) -> None:
        if self.trainer.is_global_zero:
            record = run_record.read(run_dir(self.trainer))
            print(summary(run_dir(self.trainer), record, self.config.test.get("ckpt_path")), flush=True)


SUBCOMMAND_HELP = {
    "fit": "Train, then test the best checkpoint (--test_after_fit false to skip).",
    "validate": "One evaluation epoch over the validation split.",
    "test": "One evaluation epoch over the test split (--ckpt_path best: the best checkpoint of this experiment's "
            "newest run).",
    "predict": "Classes of your images (--data.predict_path) or of the test split, into predictions.csv.",
}
DESCRIPTION = (
    "litlab: the classic MNIST / CIFAR-10 experiments with PyTorch Lightning. The subcommands below are "
    "LightningCLI's; litlab adds four more, each with its own --help: `litlab sweep FILE` runs a W&B sweep file "
    "offline (points x seeds, then mean ± std tables), `litlab report DIR [DIR ...]` writes an HTML/Markdown "
    "report of a run or sweep, or compares runs, `litlab reproduce REPORT` re-runs a report's manifest "
    "(configs/reproduce/) and writes the side-by-side tables in docs/reproduction.md, and "
    "`litlab export --ckpt_path CKPT` writes the model as TorchScript or ONNX.")


def cli_main(args: ArgsType = None, run: bool = True) -> LitlabCLI:
    """Run the litlab CLI; `args` (a list of strings) lets tests call it in-process."""
    # W&B's agent writes `--key=None`; jsonargparse wants `null`. Rewrite sys.argv in place rather than pass it
    # as `args`, which makes LightningCLI warn about getting both.
    # `--config configs/x.yaml` from outside the repository (or an installed litlab) finds litlab's own configs.
    if args is None:
        sys.argv[1:] = resolve_configs(none_to_null(sys.argv[1:]))
    else:
        args = none_to_null(args)  # a list stays a list; a dict or Namespace of arguments passes through
        args = resolve_configs(args) if isinstance(args, list) else args
    if listing := help_without_class(sys.argv[1:] if args is None else args):
        print(listing)
        raise SystemExit(0)
    quiet_known_noise()
    try:  # how a run ended is in results.json (RunRecord); here it becomes one `litlab:` line
        return LitlabCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=WandbConfig,  # config.yaml in the run directory, and the whole config in W&B runs
            save_config_kwargs={"overwrite": True},
            parser_class=LitlabParser,  # errors: one `litlab:` paragraph with the nearest valid name (cli_messages.py)
            # Keyed by subcommand so the description heads `litlab --help` only (LightningCLI applies an unkeyed
            # dict to every subcommand's parser too).
            parser_kwargs={"default_env": False, "description": DESCRIPTION,
                           **{sub: {"default_env": False} for sub in ("fit", "validate", "test", "predict")}},
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )
    except (TrainingStopped, *DOMAIN_ERRORS) as err:  # DivergenceGuard's Diverged, CollapseGuard's Collapsed, input
        raise SystemExit(clear_message(err)) from None
    except pickle.UnpicklingError as err:
        raise SystemExit(f"litlab: {untrusted_message(err)}") from None
    except OSError as err:  # a write failed: disk full, a file-size limit, a run folder that is a file...
        raise SystemExit(f"litlab: cannot write {err.filename or 'the run directory'}: {err.strerror or err}. "
                         "Free disk space, raise the file-size limit (ulimit -f), or point "
                         "trainer.logger.init_args.save_dir at a writable folder.") from None
    except SIGTERMException:  # Lightning stopped gracefully (last.ckpt is saved) and would exit 0
        sys.stderr.write("litlab: stopped by SIGTERM; the run is recorded as interrupted. Continue it with "
                         "--ckpt_path last.\n")
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        if run:
            finish_wandb()  # a process that runs several commands starts a W&B run for each


def main(argv: list[str] | None = None) -> None:
    """The `litlab` command; `argv` (without the program name) lets tests run it in-process."""
    from experiments import COMMANDS, dispatch

    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in COMMANDS:  # `litlab sweep ...`, `litlab report ...`: not LightningCLI's
        return dispatch(args[0], args[1:])
    cli_main(None if argv is None and args else args or ["--help"])


if __name__ == "__main__":
    main()
