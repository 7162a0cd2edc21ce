"""Checks on a checkpoint before it is used: whole and unaltered, naming only classes litlab may import, and
fitting the model being built.

Lightning's own error for a checkpoint of another model is a page of missing and unexpected state-dict keys;
`check_checkpoint_matches` says which model wrote the checkpoint and what to pass instead. A checkpoint altered
in place (bit rot, a bad copy) is still a valid zip; the CRC-32 of each member, recorded by torch.save's zip
writer, catches it (`verify_checkpoint_file`). LightningCLI imports the class paths saved in a checkpoint's
hyperparameters while it parses; `check_class_paths` vets them first.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn


class CheckpointError(ValueError):
    """A checkpoint file that must not be used: missing, torn, altered, or naming classes litlab won't import."""


class CheckpointMismatch(ValueError):
    """A checkpoint's weights do not fit the model (class, net or sizes) or encoder this run builds; the message
    says which model wrote the checkpoint."""


def _describe(hparams: dict[str, Any]) -> str:
    if not hparams:
        return "unknown hyperparameters"
    # The CLI saves the net as {"class_path": ..., "init_args": {...}}; in code it may be a class or callable.
    net = hparams.get("net")
    if isinstance(net, dict):
        init = net.get("init_args") or {}
        name = f"{net.get('class_path')}({', '.join(f'{k}={v}' for k, v in dict(init).items())})"
    else:
        name = getattr(net, "__name__", None) or getattr(getattr(net, "func", None), "__name__", None) or str(net)
    keys = ("num_classes", "input_shape", "optimizer", "lr")
    return f"net {name}, " + ", ".join(f"{k}={hparams[k]}" for k in keys if k in hparams)


def check_checkpoint_matches(module: nn.Module, checkpoint: dict[str, Any], model_hparams: dict[str, Any]) -> None:
    """Raise `CheckpointMismatch` naming the checkpoint's model when its weights don't fit `module`."""
    saved = checkpoint.get("state_dict")
    if saved is None:
        return
    own = module.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [f"{k}: checkpoint {list(saved[k].shape)} vs model {list(own[k].shape)}"
              for k in sorted(set(own) & set(saved)) if hasattr(saved[k], "shape") and saved[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return
    problems = "; ".join(filter(None, [
        f"missing {missing[:3]}{' …' if len(missing) > 3 else ''}" if missing else "",
        f"unexpected {unexpected[:3]}{' …' if len(unexpected) > 3 else ''}" if unexpected else "",
        f"different shapes ({'; '.join(shapes[:3])})" if shapes else "",
    ]))
    source = _describe(dict(checkpoint.get("hyper_parameters") or {}))
    raise CheckpointMismatch(
        f"the checkpoint was saved by another model ({source}); this run builds {type(module).__name__} with "
        f"{_describe(model_hparams)}. Weights that do not fit: {problems}. Run with the config of the run that "
        "wrote it (its config.yaml sits next to checkpoints/: --config <run dir>/config.yaml), or pick a "
        "checkpoint of this model."
    )


# -- checks before a checkpoint file is used (the CLI runs them on every --ckpt_path) ------------------------
# Packages whose classes a checkpoint may name: litlab's own. Any other class path must also be in the user's
# config, because resolving a class path imports its module, and importing runs that module's code.
LITLAB_PACKAGES = ("lit_models", "datamodules", "callbacks")


def verify_checkpoint_file(path: str | Path) -> None:
    """Raise `CheckpointError` unless `path` is a whole, unaltered checkpoint: a zip archive (what torch.save
    writes) whose every member matches the CRC-32 recorded when it was written. Reads the whole file once."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found. Give the path of a .ckpt file (a run's are in <run "
                              "dir>/checkpoints/), or --ckpt_path last for the newest run of this experiment.")
    what_to_do = "Use another one (e.g. best.ckpt or last.ckpt beside it), copy it again, or start the run again."
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (truncated or corrupt: not the zip archive "
                              f"torch.save writes). {what_to_do}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # the first member whose bytes no longer match their CRC-32
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        bad = f"its zip structure ({err})"
    if bad:
        raise CheckpointError(f"{path} is corrupt: {bad} does not match the checksum recorded when it was "
                              f"written (bit rot or a bad copy). {what_to_do}")


def class_paths(tree: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, class path) for every `class_path` / `_class_path` in nested hyperparameters."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in ("class_path", "_class_path") and isinstance(value, str):
                yield where or "model", value
            else:
                yield from class_paths(value, f"{where}.{key}" if where else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from class_paths(value, f"{where}[{i}]")


def check_class_paths(path: str | Path, hparams: dict[str, Any], allowed: set[str]) -> None:
    """Raise `CheckpointError` if the checkpoint names a class outside litlab's packages that the user's
    config does not name either -- before anything imports it."""
    for key, name in class_paths(hparams):
        if name.split(".")[0] not in LITLAB_PACKAGES and name not in allowed:
            raise CheckpointError(
                f"{path} names the class {name!r} (at {key}), which is not one of litlab's "
                f"({', '.join(LITLAB_PACKAGES)}) and not in your config; litlab does not import a module a "
                "checkpoint names. If you trust the file and that class, name it in your config "
                "(e.g. --model.class_path / --model.net.class_path)."
            )
