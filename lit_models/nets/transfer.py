"""Transfer nets: a (pretrained) encoder plus a linear head, driven by the shared `Classifier`.

`EncoderClassifierNet` builds `encoder(input_shape, embedding_dim)`, loads its weights from a litlab
checkpoint (a `TripletEncoder`'s, a `Classifier`'s net, or another `EncoderClassifierNet`'s encoder) and puts
a Linear head on its features. Freezing (linear probe) and unfreezing (fine-tuning) is the job of the
`callbacks.EncoderFinetuning` callback; the net only holds the two parts as the children `encoder` and `head`.

`ResNet18` wraps torchvision's resnet18 as a litlab net; `weights` (e.g. IMAGENET1K_V1) come from torch's
cache (`$TORCH_HOME/hub/checkpoints/`), downloaded there when a network is reachable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.hub import download_url_to_file

from lit_models.checkpointing import CheckpointMismatch
from lit_models.nets.mlp import MLP, Net

EncoderFactory = Callable[[Sequence[int], int], nn.Module]
PREFIXES = ("net.encoder.", "net.", "")  # EncoderClassifierNet's encoder, any litlab module's net, a bare state


def describe_checkpoint(ckpt: dict) -> str:
    """Which litlab model made a checkpoint, from its saved hyper-parameters (LightningCLI keeps class paths)."""
    hp = ckpt.get("hyper_parameters") or {}
    if not hp:
        return "a checkpoint without hyper-parameters"
    parts = [str(hp.get("_class_path", "an unknown LightningModule"))]
    for key in ("encoder", "net"):
        net = hp.get(key)
        if isinstance(net, dict):
            parts.append(f"{key}={net.get('class_path')} {net.get('init_args', {})}")
    for key in ("embedding_dim", "num_classes", "input_shape"):
        if key in hp:
            parts.append(f"{key}={hp[key]}")
    return ", ".join(parts)


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Load `encoder`'s weights from a litlab checkpoint (or a bare state dict), checking every key and shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Encoder checkpoint {path} not found: give the .ckpt of a litlab run "
                                "(e.g. runs/triplet_mnist/version_0/checkpoints/best.ckpt).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as err:
        raise CheckpointMismatch(f"{path} cannot be read as a weights-only checkpoint ({err}).") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    expected = encoder.state_dict()
    for prefix in PREFIXES:
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if found.keys() == expected.keys():
            break
    else:
        found = {k[4:]: v for k, v in state.items() if k.startswith("net.")} or state
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    shapes = [f"{k}: checkpoint {tuple(found[k].shape)} vs encoder {tuple(v.shape)}"
              for k, v in expected.items() if k in found and found[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointMismatch(
            f"{path} does not fit the configured encoder {type(encoder).__name__}. It came from "
            f"{describe_checkpoint(ckpt) if isinstance(ckpt, dict) else 'an unknown source'}. "
            f"Missing keys: {missing[:5]}; unexpected keys: {unexpected[:5]}; shape mismatches: {shapes[:5]}. "
            "Set model.net.encoder (class and init_args) and model.net.embedding_dim to the architecture that "
            "checkpoint was trained with (for a Classifier's net, embedding_dim = its num_classes)."
        )
    encoder.load_state_dict(found)


def drop_last_linear(module: nn.Module) -> int:
    """Replace the last nn.Linear inside `module` (its output layer) by nn.Identity; return its in_features."""
    linears = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"features='penultimate' needs an nn.Linear output layer in {type(module).__name__}.")
    name, last = linears[-1]
    parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return last.in_features


class EncoderClassifierNet(Net):
    """encoder (optionally loaded from a checkpoint) → features [B, F] → Linear head → logits [B, num_classes]."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        encoder: EncoderFactory = MLP,
        embedding_dim: int = 64,
        checkpoint: str | None = None,
        features: Literal["output", "penultimate"] = "output",
        normalize: bool = False,
    ) -> None:
        """
        Args:
            input_shape: Shape of one input (C, H, W); linked from the data module.
            num_classes: Number of classes of the head; linked from the data module.
            encoder: The encoder net, built as (input_shape, embedding_dim): the same class and init_args as the
                model that made `checkpoint` (e.g. `lit_models.MLP` with `hidden: [512, 256]`).
            embedding_dim: The encoder's output size (a TripletEncoder's embedding_dim, a Classifier's
                num_classes).
            checkpoint: litlab `.ckpt` to load the encoder from (keys `net.*` or `net.encoder.*`); None keeps
                the encoder's fresh initialisation (training from scratch).
            features: "output": the head reads the encoder's output (a triplet embedding); "penultimate": drop
                the encoder's last Linear first (a classifier's logits layer) and read what fed it.
            normalize: L2-normalise the features (as a TripletEncoder with normalize=True was trained).
        """
        super().__init__()
        self.encoder = encoder(tuple(input_shape), embedding_dim)
        self.checkpoint = checkpoint
        if checkpoint is not None:
            load_encoder_weights(self.encoder, checkpoint)
        # Read by callbacks.EncoderFinetuning (a probe of random weights is a mistake): trained weights come from
        # `checkpoint` or from the encoder itself (e.g. EfficientNetLite0's ImageNet weights, `pretrained=True`).
        self.pretrained = checkpoint is not None or getattr(self.encoder, "pretrained", False) is True
        width = drop_last_linear(self.encoder) if features == "penultimate" else embedding_dim
        self.normalize = normalize
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x).flatten(1)  # [B, F]
        return self.head(F.normalize(z, dim=1) if self.normalize else z)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says how to provide them."""


def torchvision_state_dict(name: str, arch: str = "resnet18") -> dict[str, Tensor]:
    """The state dict of torchvision weights `name` (e.g. IMAGENET1K_V1), from torch's cache or downloaded."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    try:
        weights = enum[name]
    except KeyError:
        raise ValueError(f"Unknown {arch} weights {name!r}: choose one of {[w.name for w in enum]}.") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            download_url_to_file(weights.url, str(cached), progress=False)
        except Exception as err:  # URLError, socket errors, ... when offline
            raise WeightsUnavailable(
                f"torchvision {arch} weights {name} are not in the cache ({cached}) and downloading them from "
                f"{weights.url} failed ({type(err).__name__}: {err}). On a machine with a network run "
                f"`python -c \"import torchvision; torchvision.models.{arch}(weights='{name}')\"` and copy "
                f"{os.path.basename(weights.url)} to {cached.parent}/ (or point TORCH_HOME at a folder whose "
                "hub/checkpoints/ holds it); or transfer from a litlab checkpoint instead "
                "(model.net: lit_models.EncoderClassifierNet with checkpoint: <run>/checkpoints/best.ckpt)."
            ) from err
    return torch.load(cached, map_location="cpu", weights_only=True)


class ResNet18(Net):
    """torchvision's resnet18 as a litlab net: (input_shape, num_classes), optional pretrained `weights`."""

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                 weights: str | None = None) -> None:
        """
        Args:
            input_shape: Shape of one input (C, H, W); 1-channel inputs get a 1-channel first conv (pretrained
                weights summed over RGB).
            num_classes: Outputs of the final Linear (`fc`), replaced after loading pretrained weights.
            weights: torchvision weights name, e.g. IMAGENET1K_V1 (cached under $TORCH_HOME/hub/checkpoints/);
                None = random initialisation.
        """
        super().__init__()
        from torchvision.models import resnet18

        self.model = resnet18(num_classes=1000 if weights else num_classes)
        if weights:
            self.model.load_state_dict(torchvision_state_dict(weights))
            self.model.fc = nn.Linear(self.model.fc.in_features, num_classes)
        if input_shape[0] != 3:
            old = self.model.conv1
            conv = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
            if weights:
                with torch.no_grad():
                    conv.weight.copy_(old.weight.sum(1, keepdim=True).expand_as(conv.weight) / input_shape[0])
            self.model.conv1 = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
