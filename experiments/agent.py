"""Runs started by `wandb agent` log to their sweep: add a WandbLogger when the agent's environment says so.

`wandb agent` starts each run as a plain process with `WANDB_SWEEP_ID` (and the run id, project, entity) in its
environment; `wandb.init` inside a WandbLogger then joins that sweep by itself. So litlab only needs a W&B
logger to exist: added here, beside the configured ones, when the variable is set and none is configured. DDP
ranks are started by Lightning with the same argv and environment, parse the same config, and only rank zero
ever creates the W&B run (WandbLogger's experiment is rank-zero only).
"""

from __future__ import annotations

import os
from typing import Any

from jsonargparse import Namespace

from runtime.logger_config import configured_loggers, first_logger_args

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"


def add_sweep_logger(cfg: Any) -> None:
    """Append a WandbLogger (save_dir = the first logger's) to `cfg.trainer.logger` under `wandb agent`."""
    loggers = configured_loggers(cfg)
    if not os.environ.get("WANDB_SWEEP_ID") or not loggers:
        return
    if any("WandbLogger" in str(getattr(lg, "class_path", lg)) for lg in loggers):
        return
    save_dir = getattr(first_logger_args(cfg), "save_dir", None) or "."
    loggers.append(Namespace(class_path=WANDB_LOGGER, init_args=Namespace(save_dir=save_dir)))
    cfg.trainer.logger = loggers


def none_to_null(argv: Any) -> Any:
    """W&B's agent writes a `null` sweep value as Python's `--key=None`; jsonargparse reads YAML, where null
    is `null` and `None` is a string (which `Weighting | None` rejects). Rewrite that one spelling."""
    if not isinstance(argv, (list, tuple)):
        return argv  # a dict or Namespace of arguments: nothing formatted by W&B
    out = []
    for i, a in enumerate(argv):
        if a.startswith("--") and a.endswith("=None"):
            a = a[: -len("None")] + "null"
        elif a == "None" and i > 0 and argv[i - 1].startswith("--") and "=" not in argv[i - 1]:
            a = "null"  # ${args_no_equals}: `--key None`
        out.append(a)
    return out
