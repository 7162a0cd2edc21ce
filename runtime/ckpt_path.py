"""`--ckpt_path` before LightningCLI reads it: `last`/`best` resolved, the file vetted, the model compared.

LightningCLI loads the checkpoint's hyperparameters while it parses (torch.load with weights_only=True) and
replaces the config's model with them, importing every class path they name. So, first: `last` and `best` become
paths the same way for every subcommand (`runtime.resume.resolve_checkpoint`); the file must be whole and
unaltered (zip CRCs) and name only classes litlab may import (`lit_models.checkpointing`). Afterwards the model
settings the config asked for are compared with the checkpoint's: a resume cannot change them (the restored
optimizer state keeps the old learning rate, the saved weights the old net), evaluation reports what it overrode.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch

from runtime.resume import resolve_checkpoint
from lit_models.checkpointing import CheckpointError, check_class_paths, class_paths, verify_checkpoint_file


def untrusted_message(err: BaseException) -> str:
    lines = [line.split(" Please use")[0].strip(" .") for line in str(err).splitlines() if "Unsupported global" in line]
    return ("the checkpoint holds Python objects that safe loading (torch.load with weights_only=True) refuses"
            f"{' (' + lines[0][:200] + ')' if lines else ''}. Load it only if you trust where it came from: "
            "--weights_only false.")


def vet_ckpt_path(cfg: Any) -> None:
    """Resolve `cfg.ckpt_path` (a subcommand's config) in place and check the file; SystemExit with one
    `litlab: ...` line if it cannot be used."""
    try:
        if cfg.ckpt_path in ("last", "best"):
            cfg.ckpt_path = resolve_checkpoint(cfg, cfg.ckpt_path)
        verify_checkpoint_file(cfg.ckpt_path)
        hparams = torch.load(cfg.ckpt_path, weights_only=True, map_location="cpu", mmap=True)
        check_class_paths(cfg.ckpt_path, hparams.get("hyper_parameters") or {},
                          allowed={name for _, name in class_paths(cfg.as_dict())})
    except (CheckpointError, FileNotFoundError) as err:
        raise SystemExit(f"litlab: {err}") from None
    except pickle.UnpicklingError as err:
        raise SystemExit(f"litlab: {cfg.ckpt_path}: {untrusted_message(err)}") from None


def model_settings(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A model config as {"lr": 0.1, "net.hidden": [128, 64], ...}; the values the data links in are left out."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = prefix if key == "init_args" else f"{prefix}{key}."
        if isinstance(value, dict):
            flat.update(model_settings(value, name))
        elif key not in ("num_classes", "input_shape"):
            flat[name[:-1]] = value
    return flat


def changed_settings(asked: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """Each model setting the config asked for that the checkpoint's hyperparameters replaced."""
    return [f"model.{k}: checkpoint {saved[k]}, this command {asked[k]}"
            for k in asked if k in saved and asked[k] != saved[k]]


def refuse_changed_resume(ckpt_path: str, changed: list[str]) -> SystemExit:
    return SystemExit(
        f"litlab: --ckpt_path {ckpt_path} resumes a run as it was configured, but this command changes its model "
        f"({'; '.join(changed)}). A resume continues from the saved weights and optimizer state (learning rate "
        "included), where such a change cannot take effect. Resume with the run's own settings "
        "(--config <run dir>/config.yaml), or start a new run without --ckpt_path.")
