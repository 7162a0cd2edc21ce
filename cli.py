"""litlab's command line: LightningCLI with litlab's links, checkpointing and run-directory outputs.

    litlab fit --config configs/base.yaml --config configs/quickstart.yaml
    litlab test --config configs/base.yaml --config configs/quickstart.yaml --ckpt_path runs/.../best.ckpt

Every run writes into one run directory (the first logger's `log_dir`, `runs/<name>/version_<n>/` by default):
the resolved `config.yaml`, `metrics.csv`, `checkpoints/`, `figures/` and `results.json`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.artifacts import run_dir, write_json_atomic
from callbacks.fast_profiler import NullProfiler


def metric_values(trainer: L.Trainer) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def find_last_checkpoint(cfg: Any) -> str:
    """`--ckpt_path last` in a new process: the newest `last.ckpt` among this experiment's run directories."""
    logger = cfg.trainer.logger[0] if isinstance(cfg.trainer.logger, list) else cfg.trainer.logger
    init = getattr(logger, "init_args", None)
    root = Path(getattr(init, "save_dir", None) or cfg.trainer.default_root_dir or ".") / str(
        getattr(init, "name", None) or "lightning_logs")
    found = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"--ckpt_path last: no last.ckpt under {root}/*/checkpoints/. Give the checkpoint's path instead, "
            "or check trainer.logger's save_dir and name (they locate this experiment's runs)."
        )
    return str(found[-1])


class LitlabCLI(LightningCLI):
    """LightningCLI plus: data→model links, best/last checkpoints, test after fit, and `results.json`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Every litlab LightningModule takes these two, so configs never repeat what the data defines.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        # Checkpointing is always on and configured under its own key, so `trainer.callbacks` in a config
        # only lists extra callbacks and cannot drop it by accident.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/acc",
            "checkpoint.mode": "max",
            "checkpoint.filename": "best",
            "checkpoint.save_last": True,
        })
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="fit only: test the best checkpoint when training ends (results.json gets test/*)")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.profiler) is PassThroughProfiler:  # none asked for: the cheaper no-op (docs/performance.md)
            trainer.profiler = NullProfiler()
        return trainer

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config)
        # A progress bar that redraws every 20 steps: Lightning's default redraws (and re-reads every metric)
        # each step, which costs more than a step of a small MLP. A bar listed in trainer.callbacks wins.
        callbacks = cfg.trainer.callbacks or []
        has_bar = any("ProgressBar" in str(getattr(c, "class_path", c)) for c in callbacks)
        if cfg.trainer.enable_progress_bar is not False and not has_bar:
            self.trainer_defaults["callbacks"] = [TQDMProgressBar(refresh_rate=20)]
        # configs/gpu.yaml's bf16 autocast is a GPU speed-up; on a CPU it only slows runs down, so it is a no-op there.
        bf16 = str(cfg.trainer.precision).startswith("bf16")
        if bf16 and cfg.trainer.accelerator == "auto" and not torch.cuda.is_available():
            rank_zero_warn(f"precision={cfg.trainer.precision} needs a GPU; none found, training in 32-true.")
            cfg.trainer.precision = "32-true"
        if self.subcommand == "fit" and cfg.get("ckpt_path") == "last":
            cfg.ckpt_path = find_last_checkpoint(cfg)
        # W&B writes its files to the working directory unless told otherwise; keep them under the runs folder.
        loggers = cfg.trainer.logger if isinstance(cfg.trainer.logger, list) else [cfg.trainer.logger]
        for logger in loggers:
            save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
            if save_dir:
                os.environ.setdefault("WANDB_DIR", str(save_dir))
                Path(save_dir).mkdir(parents=True, exist_ok=True)
                break

    # -- fit: time it, test the best checkpoint, record the results ------------------------------------------
    def before_fit(self) -> None:
        self._t0 = time.perf_counter()

    def after_fit(self) -> None:
        results: dict[str, Any] = {
            "status": "interrupted" if self.trainer.interrupted else "finished",
            "fit_seconds": round(time.perf_counter() - self._t0, 3),
            "epochs": self.trainer.current_epoch,
            "global_step": self.trainer.global_step,
            **metric_values(self.trainer),
        }
        ckpt = self.trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_path:
            results["best_checkpoint"] = ckpt.best_model_path
        if self.config.fit.test_after_fit and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule,
                              ckpt_path="best" if results.get("best_checkpoint") else None)
            results.update({k: v for k, v in metric_values(self.trainer).items() if k.startswith("test/")})
        if self.trainer.is_global_zero:
            write_json_atomic(run_dir(self.trainer) / "results.json", results)

    def after_test(self) -> None:
        if self.trainer.is_global_zero:
            write_json_atomic(run_dir(self.trainer) / "results.json", {"status": "tested", **metric_values(self.trainer)})


def cli_main(args: ArgsType = None, run: bool = True) -> LitlabCLI:
    """Run the litlab CLI; `args` (a list of strings) lets tests call it in-process."""
    return LitlabCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main() -> None:
    cli_main(None if sys.argv[1:] else ["--help"])


if __name__ == "__main__":
    main()
