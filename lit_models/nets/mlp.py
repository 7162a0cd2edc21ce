"""Plain `nn.Module` classifiers. They know nothing of Lightning; `Classifier` trains any of them.

Every net takes `(input_shape, num_classes, ...)` first, so the CLI can build it from the data module's
`input_shape` and `num_classes` (see `Classifier`'s `net` argument).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


def scaled_normal_(module: nn.Module, std: float = 0.1) -> None:
    """N(0, std) / sqrt(fan_in) for every Linear/Conv weight and zero biases (the seed report's init)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, 0.0, std / math.sqrt(fan_in))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Net(nn.Module):
    """Marker base of litlab's nets, so `--model.net.help` lists them and not all of torch.nn."""


class MLP(nn.Sequential, Net):
    """Flatten → [Linear → (BatchNorm) → activation → (Dropout)] × len(hidden) → Linear.

    An `nn.Sequential`, so analysis callbacks can walk its layers: `net[1]` is the first Linear.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        hidden: Sequence[int] = (128, 64),
        activation: Literal["relu", "tanh", "sigmoid"] = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
        init: Literal["default", "scaled_normal"] = "default",
    ) -> None:
        """
        Args:
            input_shape: Shape of one input, e.g. (1, 28, 28); linked from the data module.
            num_classes: Number of outputs; linked from the data module.
            hidden: Width of each hidden layer, e.g. [1024, 512, 256]; [] gives softmax regression.
            activation: Hidden-layer non-linearity: relu, tanh or sigmoid.
            batch_norm: Put BatchNorm1d after each hidden Linear (before the activation).
            dropout: Dropout probability after each hidden activation (0 disables it).
            init: "default" (PyTorch's Kaiming-uniform) or "scaled_normal": N(0, 0.1)/sqrt(fan_in), zero bias.
        """
        act = globals()["activation"]  # the helper, shadowed here by the argument of the same name
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {list(hidden)}.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(act(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        if init == "scaled_normal":
            scaled_normal_(self)
        elif init != "default":
            raise ValueError(f"Unknown init {init!r}: choose 'default' or 'scaled_normal'.")
