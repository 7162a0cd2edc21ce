"""`--ckpt_path last` and resuming into the same run directory: CLI plumbing on the parsed config, no callback.

The callback side of exact resume (what `last.ckpt` holds, when it is written) is
`callbacks/training/checkpoint.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.logger_config import first_logger_args


def find_last_checkpoint(cfg: Any, name: str = "last") -> str:
    """`--ckpt_path last` (`best`) in a new process: the newest `last.ckpt` (`best.ckpt`) among this experiment's
    run directories."""
    root = experiment_root(cfg)
    found = sorted(root.glob(f"*/checkpoints/{name}.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"--ckpt_path {name}: no {name}.ckpt under {root}/*/checkpoints/. Give the checkpoint's path instead, "
            "or check trainer.logger's save_dir and name (they locate this experiment's runs)."
        )
    return str(found[-1])


def experiment_root(cfg: Any) -> Path:
    init = first_logger_args(cfg)
    return Path(getattr(init, "save_dir", None) or cfg.trainer.default_root_dir or ".") / str(
        getattr(init, "name", None) or "lightning_logs")


def resume_in_same_directory(cfg: Any, ckpt_path: str) -> None:
    """If `ckpt_path` is `<root>/<version>/checkpoints/*.ckpt` of this experiment and the first logger (CSV or
    TensorBoard) has no version set, log into that version again, so the run keeps one directory."""
    init = first_logger_args(cfg)
    if init is None or "version" not in init or init.version is not None:
        return
    ckpt = Path(ckpt_path).resolve()
    if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.parent == experiment_root(cfg).resolve():
        version = ckpt.parent.parent.name
        init.version = int(version[8:]) if version.startswith("version_") and version[8:].isdigit() else version
