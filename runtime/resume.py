"""`--ckpt_path last` and resuming into the same run directory: CLI plumbing on the parsed config, no callback.

The callback side of exact resume (what `last.ckpt` holds, when it is written) is
`callbacks/training/checkpoint.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from runtime.logger_config import first_logger_args


def resolve_checkpoint(cfg: Any, which: str) -> str:
    """`--ckpt_path last|best` in a new process, for fit, validate, test and predict alike: this experiment's
    newest run (the newest `last.ckpt` among its run directories), and its `last.ckpt` or its best checkpoint.
    (Lightning's own `last`/`best` mean the checkpoints of the trainer's current fit, which a new process lacks:
    `test --ckpt_path last` would test an untrained model.)"""
    root = experiment_root(cfg)
    found = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"--ckpt_path {which}: no last.ckpt under {root}/*/checkpoints/. Give the checkpoint's path instead, "
            "or check trainer.logger's save_dir and name (they locate this experiment's runs)."
        )
    last = found[-1]
    if which == "last":
        return str(last)
    # The best checkpoint is the one the run's checkpoint callback tracked; its state is saved in `last.ckpt`.
    states = torch.load(last, weights_only=True, map_location="cpu").get("callbacks", {})
    best = next((s.get("best_model_path") for k, s in states.items() if k.startswith("LitlabCheckpoint")), "")
    for candidate in (Path(best), last.parent / Path(best).name) if best else ():
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"--ckpt_path best: the newest run, {last.parent.parent}, has no best checkpoint (its checkpoint callback "
        f"recorded {best or 'none'}). Give a checkpoint's path, or --ckpt_path last."
    )


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
