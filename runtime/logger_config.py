"""The configured loggers of a parsed (not yet instantiated) config: the one place that reads `trainer.logger`.

The CLI (W&B's folder), `--ckpt_path last` / resume (which run directory) and the W&B agent (which logger to add)
all need it before any logger exists; `trainer.logger` may be one entry, a list, or true/false/null.
"""

from __future__ import annotations

from typing import Any


def configured_loggers(cfg: Any) -> list[Any]:
    """`cfg.trainer.logger` as a list of class_path/init_args entries ([] for true, false or null)."""
    logger = cfg.trainer.logger
    if logger in (None, False, True):
        return []
    return list(logger) if isinstance(logger, list) else [logger]


def logger_args(logger: Any) -> Any:
    """A logger entry's init_args (a Namespace), or None."""
    return getattr(logger, "init_args", None)


def first_logger_args(cfg: Any) -> Any:
    """The first configured logger's init_args (it names the run directory), or None."""
    loggers = configured_loggers(cfg)
    return logger_args(loggers[0]) if loggers else None


def first_save_dir(cfg: Any) -> str | None:
    """The save_dir of the first configured logger that sets one."""
    return next((str(d) for lg in configured_loggers(cfg) if (d := getattr(logger_args(lg), "save_dir", None))), None)
