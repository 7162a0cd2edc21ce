"""litlab's command line: LightningCLI with litlab's links, checkpointing and run-directory outputs.

    litlab fit --config configs/base.yaml --config configs/quickstart.yaml
    litlab test --config configs/base.yaml --config configs/quickstart.yaml --ckpt_path runs/.../best.ckpt
    litlab sweep configs/sweeps/mlp_layers.yaml --seeds 3      # experiments/sweep.py
    litlab report runs/sweeps/mlp_layers                        # experiments/report.py

Every run writes into one run directory (the first logger's `log_dir`, `runs/<name>/version_<n>/` by default):
the resolved `config.yaml`, `metrics.csv`, `checkpoints/`, `figures/` and `results.json`.
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.training.checkpoint import LitlabCheckpoint
from callbacks.training.divergence import Diverged, DivergenceGuard
from cli_messages import LitlabParser, help_without_class
from runtime.console import EpochLines, quiet_known_noise, summary
from experiments.agent import add_sweep_logger, none_to_null
from runtime.checkpoint_io import AtomicCheckpointIO
from runtime import run_record
from runtime.files import run_dir
from runtime.run_record import DOMAIN_ERRORS, RunRecord, untrusted_message
from runtime.lightning_private import CLIHooks
from runtime.logger_config import first_save_dir
from runtime.profiler import NullProfiler
from runtime.resume import find_last_checkpoint, resume_in_same_directory

def check_checkpoint_file(ckpt_path: str | None) -> None:
    """A clear message for a missing or torn checkpoint file (torch.save writes a zip archive)."""
    if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry") or "://" in str(ckpt_path):
        return
    path = Path(ckpt_path)
    if not path.is_file():
        raise SystemExit(f"litlab: checkpoint {path} not found. Give the path of a .ckpt file (a run's are in "
                         "<run dir>/checkpoints/), or --ckpt_path last to resume the newest run of this experiment.")
    if not zipfile.is_zipfile(path):
        raise SystemExit(f"litlab: {path} is not a complete checkpoint (truncated or corrupt: not the zip archive "
                         "torch.save writes). Use another one, e.g. best.ckpt beside it, or start the run again.")


def unique_callbacks(callbacks: list | None) -> list | None:
    """Every config adds its callbacks with `trainer.callbacks+:` (appended in config order), so stacking
    overlays never drops an experiment's own; an entry listed twice with the same arguments (two configs that
    both want LearningCurves) runs once. A plain `trainer.callbacks:` replaces the list on purpose."""
    if not callbacks:
        return callbacks
    return [c for i, c in enumerate(callbacks) if c not in callbacks[:i]]


def clear_message(err: BaseException) -> str:
    """`litlab: <the innermost domain error>` on one line: jsonargparse wraps an error raised while building a
    class in "Does not validate against any of the subtypes ...", whose cause is the message that matters."""
    inner, cause = err, err
    while (cause := cause.__cause__ or cause.__context__) is not None:
        if isinstance(cause, DOMAIN_ERRORS):
            inner = cause
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
        # LightningCLI reads the checkpoint's hyperparameters (torch.load, weights_only=True) while parsing.
        sub = self.config.get("subcommand")
        name = self.config[sub].get("ckpt_path") if sub in ("validate", "test", "predict") else None
        if name in ("best", "last"):
            try:  # the newest best.ckpt (last.ckpt) of this experiment's runs: READMEs need no version_<n> paths
                self.config[sub].ckpt_path = find_last_checkpoint(self.config[sub], name)
            except FileNotFoundError as err:
                raise SystemExit(clear_message(err)) from None
        check_checkpoint_file(self.config[sub].get("ckpt_path") if sub else None)
        try:
            parse()
        except pickle.UnpicklingError as err:
            raise SystemExit(f"litlab: {untrusted_message(err)}") from None

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.profiler) is PassThroughProfiler:  # none asked for: the cheaper no-op (docs/performance.md)
            trainer.profiler = NullProfiler()
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
        # configs/gpu.yaml's bf16 autocast is a GPU speed-up; on a CPU it only slows runs down, so it is a no-op there.
        bf16 = str(cfg.trainer.precision).startswith("bf16")
        if bf16 and cfg.trainer.accelerator == "auto" and not torch.cuda.is_available():
            rank_zero_warn(f"precision={cfg.trainer.precision} needs a GPU; none found, training in 32-true.")
            cfg.trainer.precision = "32-true"
        if self.subcommand == "fit" and cfg.get("ckpt_path") == "last":
            try:
                cfg.ckpt_path = find_last_checkpoint(cfg)
            except FileNotFoundError as err:
                raise SystemExit(clear_message(err)) from None
        if self.subcommand == "fit" and cfg.get("ckpt_path"):
            resume_in_same_directory(cfg, cfg.ckpt_path)  # one run, one directory: metrics.csv keeps its rows
        if "weights_only" in cfg and cfg.weights_only is None:
            cfg.weights_only = True  # safe loading (tensors and plain types only); --weights_only false to trust a file
        add_sweep_logger(cfg)  # under `wandb agent`: log to the sweep (experiments/agent.py)
        # W&B writes its files to the working directory unless told otherwise; keep them under the runs folder.
        if save_dir := first_save_dir(cfg):
            os.environ.setdefault("WANDB_DIR", save_dir)
            Path(save_dir).mkdir(parents=True, exist_ok=True)

    # -- reliability: atomic checkpoints, statuses in results.json, clear errors (README: Reliability) -------
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except DOMAIN_ERRORS as err:
            raise SystemExit(clear_message(err)) from None
        # config.yaml describes the run from its start, so `fit --config <run>/config.yaml` re-runs it even when
        # the run was resumed (resuming is `--ckpt_path last`, not part of the run's description).
        for cb in self.trainer.callbacks:
            if isinstance(cb, SaveConfigCallback) and cb.config.get("ckpt_path"):
                cb.config = cb.config.clone()
                cb.config.ckpt_path = None
        # Checkpoints are written to a temporary name and renamed: a kill mid-write never leaves a torn file.
        if type(self.trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO":
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    # -- fit: test the best checkpoint (runtime/run_record.py's RunRecord writes results.json) -------------------
    def before_fit(self) -> None:
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
        ckpt = self.trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt is not None else ""
        if self.config.fit.test_after_fit and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False, ckpt_path="best" if best else None)
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
    "test": "One evaluation epoch over the test split (--ckpt_path best: this experiment's newest best.ckpt).",
    "predict": "Class probabilities for the test split.",
}
DESCRIPTION = (
    "litlab: the classic MNIST / CIFAR-10 experiments with PyTorch Lightning. The subcommands below are "
    "LightningCLI's; litlab adds three more, each with its own --help: `litlab sweep FILE` runs a W&B sweep file "
    "offline (points x seeds, then mean ± std tables), `litlab report DIR [DIR ...]` writes an HTML/Markdown "
    "report of a run or sweep, or compares runs, and `litlab reproduce REPORT` re-runs a report's manifest "
    "(configs/reproduce/) and writes the side-by-side tables in docs/reproduction.md.")


def cli_main(args: ArgsType = None, run: bool = True) -> LitlabCLI:
    """Run the litlab CLI; `args` (a list of strings) lets tests call it in-process."""
    # W&B's agent writes `--key=None`; jsonargparse wants `null`. Rewrite sys.argv in place rather than pass it
    # as `args`, which makes LightningCLI warn about getting both.
    if args is None:
        sys.argv[1:] = none_to_null(sys.argv[1:])
    else:
        args = none_to_null(args)
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

    except pickle.UnpicklingError as err:
        raise SystemExit(f"litlab: {untrusted_message(err)}") from None
    except (Diverged, *DOMAIN_ERRORS) as err:
        raise SystemExit(clear_message(err)) from None

def main(argv: list[str] | None = None) -> None:
    """The `litlab` command; `argv` (without the program name) lets tests run it in-process."""
    from experiments import COMMANDS, dispatch

    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in COMMANDS:  # `litlab sweep ...`, `litlab report ...`: not LightningCLI's
        return dispatch(args[0], args[1:])
    cli_main(None if argv is None and args else args or ["--help"])


if __name__ == "__main__":
    main()
