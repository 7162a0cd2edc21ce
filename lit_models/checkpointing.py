"""Checking that a checkpoint fits the model being built, before Lightning's strict load fails on it.

Lightning's own error for a checkpoint of another model is a page of missing and unexpected state-dict keys;
`check_checkpoint_matches` says which model wrote the checkpoint and what to pass instead.
"""

from __future__ import annotations

from typing import Any

from torch import nn


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
