"""W&B conventions: a W&B run is named after litlab's run directory and holds its whole resolved config.

`configure_wandb` fills in, for every `WandbLogger` in the config, what the user left unset:

- `save_dir` = the first logger's (W&B's files in `runs/wandb/`, not in the working directory);
- `name` = the run directory below save_dir, `<name>/version_<n>` (a sweep's `<point>/seed<k>`), and `id` =
  that plus a hash of the directory's absolute path: W&B ids are unique per project, and a resumed or requeued
  run (same directory) continues the same W&B run (`resume: allow`);
- `group` = `$WANDB_RUN_GROUP` (`litlab sweep` sets it to `<sweep>/<point>`, so a point's seeds are grouped),
  else the experiment's name;
- `tags` = the config files used (`base`, `quickstart`, `reproduce/000/mlp`, ...);
- `log_model: true` (best and last checkpoints as artifacts at the end of fit) with `offline: true`, which
  Lightning refuses: the run is made offline through W&B's own `mode` instead, so the artifacts wait in the
  offline run for `wandb sync`.

`WandbConfig` (the CLI's SaveConfigCallback) puts the resolved config — trainer, seed, callbacks, checkpoint,
data, model — into the W&B run's config; Lightning's own `log_hyperparams` gives it the model's and data
module's hyperparameters only.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from runtime.files import run_dir as run_directory_of


def logger_configs(cfg: Any) -> list[Any]:
    logger = cfg.trainer.logger
    return list(logger) if isinstance(logger, list) else [logger] if logger not in (None, True, False) else []


def is_wandb(logger_cfg: Any) -> bool:
    return "WandbLogger" in str(getattr(logger_cfg, "class_path", ""))


def run_directory(cfg: Any) -> tuple[str, Path] | None:
    """(experiment name, run directory) the first logger will write to, when it is a CSV/TensorBoard logger.

    An unset version is resolved as those loggers do (the next free `version_<n>`), before any directory exists.
    """
    loggers = logger_configs(cfg)
    init = getattr(loggers[0], "init_args", None) if loggers else None
    if init is None or is_wandb(loggers[0]) or "version" not in init:
        return None
    name = str(init.get("name") or "lightning_logs")
    version = CSVLogger(str(init.get("save_dir") or "."), name, init.version).version
    folder = version if isinstance(version, str) else f"version_{version}"
    return name, Path(str(init.get("save_dir") or ".")) / name / folder


def run_id(run: Path) -> str:
    """A W&B run id for the directory: readable, unique per absolute path, in W&B's allowed characters."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{run.parent.name}-{run.name}").strip("-")[:48]
    return f"{slug}-{hashlib.sha1(str(run.resolve()).encode()).hexdigest()[:8]}"


def config_tags(config_files: Any) -> list[str]:
    """`configs/reproduce/000/mlp.yaml` → `reproduce/000/mlp`; files outside a configs/ folder → their stem."""
    tags = []
    for f in config_files or []:
        path = Path(str(getattr(f, "relative", f)))
        parts = path.with_suffix("").parts
        tag = "/".join(parts[len(parts) - parts[::-1].index("configs"):]) if "configs" in parts else path.stem
        if tag and tag not in tags:
            tags.append(tag[:64])  # W&B's limit per tag
    return tags


def configure_wandb(cfg: Any) -> None:
    """Name, id, group, tags and resume of every WandbLogger in `cfg` (a subcommand's config), where unset."""
    wandb_cfgs = [lg for lg in logger_configs(cfg) if is_wandb(lg)]
    if not wandb_cfgs:
        return
    where = run_directory(cfg)
    for lg in wandb_cfgs:
        init = lg.init_args
        save_dir = init.get("save_dir")
        if str(save_dir) == "." and not init.get("dir") and where is not None:  # WandbLogger's default: the cwd
            save_dir = where[1].parent.parent  # beside the run directories: `<save_dir>/wandb/`
        if save_dir:  # absolute: W&B resolves a relative one against the first run's working directory
            init.save_dir = str(Path(save_dir).resolve())
        if where is not None:
            name, run = where
            init.name = init.get("name") or f"{name}/{run.name}"
            if not (init.get("version") or init.get("id")):
                init.id = run_id(run)
        init.group = init.get("group") or os.environ.get("WANDB_RUN_GROUP") or (where[0] if where else None)
        init.tags = list(dict.fromkeys([*(init.get("tags") or []), *config_tags(cfg.get("config"))]))
        if init.get("resume") is None:
            init.resume = "allow"  # the same directory again (resume, requeue) continues the same W&B run
        if init.get("log_model") and init.get("offline"):
            init.offline, init.mode = False, "offline"


class WandbConfig(SaveConfigCallback):
    """Saves `config.yaml` in the run directory (LightningCLI's behaviour) and gives W&B runs the whole config."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        runs = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not runs:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("config", None)  # the config files: they are the run's tags
        config["run_dir"] = str(run_directory_of(trainer))
        for logger in runs:
            logger.experiment.config.update(config, allow_val_change=True)


def finish_wandb() -> None:
    """End the W&B run when the CLI command ends (however it ends), so a process that runs several commands (a
    sweep `--in-process`, tests) starts a new W&B run for each, and the offline run file is complete. Only the
    process whose WandbLogger started a run (rank zero) has one open; W&B is not imported when no run used it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
