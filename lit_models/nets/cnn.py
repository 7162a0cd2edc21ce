"""Convolutional nets: LeNet-5 (the report's MNIST CNN) and a small batch-norm CNN for 32x32 colour images.

Both are flat `nn.Sequential`s, so analysis callbacks walk their layers like the MLP's: the first Conv2d is the
first layer WeightTemplates shows, and every nn.ReLU is a hidden layer HiddenRepresentations can hook.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from lit_models.nets.mlp import Net


def _check(input_shape: Sequence[int], num_classes: int, dropout: float) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {list(input_shape)}.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


class _Sequential(nn.Sequential, Net):
    """`net[a:b]` is a plain nn.Sequential of those layers (same names), e.g. `net[:-1]` as an encoder:
    nn.Sequential would rebuild a slice with `type(self)(...)`, whose arguments are shapes, not layers."""

    def __getitem__(self, idx: int | slice) -> nn.Module:
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)


class LeNet5(_Sequential):
    """conv 6@5x5 → max-pool 2 → conv 16@5x5 → max-pool 2 → FC 120 → dropout → FC 84 → dropout → FC classes.

    ReLU after each conv and hidden FC. Unpadded convolutions: 28x28 → 24 → 12 → 8 → 4, so the flattened
    features are 16·4·4 = 256 on MNIST; 32x32 inputs give 16·5·5 = 400 (computed from `input_shape`).
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, dropout: float = 0.5) -> None:
        """
        Args:
            input_shape: Shape of one input (C, H, W); linked from the data module. H and W must be >= 16.
            num_classes: Number of outputs; linked from the data module.
            dropout: Dropout probability after each of the two hidden FC layers (0 disables it).
        """
        c, h, w = _check(input_shape, num_classes, dropout)
        side = lambda s: ((s - 4) // 2 - 4) // 2  # noqa: E731 — conv5 → pool2 → conv5 → pool2
        if side(h) < 1 or side(w) < 1:
            raise ValueError(f"LeNet5 needs images of at least 16x16, got {h}x{w}.")
        super().__init__(
            nn.Conv2d(c, 6, 5), nn.ReLU(), nn.MaxPool2d(2),  # [N, 6, 12, 12] on MNIST
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # [N, 16, 4, 4]
            nn.Flatten(),  # [N, 256]
            nn.Linear(16 * side(h) * side(w), 120), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )


class BNCNN(_Sequential):
    """Four 3x3 convs (64, 64, 128, 128; padding 1), each + BatchNorm + ReLU, a 2x2 max-pool after the 2nd and
    4th, then FC `hidden` + ReLU + dropout and a final Linear to `num_classes` outputs.

    32x32x3 → [N, 64, 16, 16] → [N, 128, 8, 8] → 8192 features → `hidden` → `num_classes`. The output size is
    only an argument, so the same net is a classifier (num_classes = classes) or an embedding encoder
    (num_classes = embedding size); `net[:-1]` is the encoder without its last layer.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        hidden: int = 4096,
        dropout: float = 0.1,
    ) -> None:
        """
        Args:
            input_shape: Shape of one input (C, H, W); linked from the data module. H and W must be >= 4.
            num_classes: Output size: the number of classes, or the embedding size when used as an encoder.
            hidden: Width of the fully connected hidden layer (the report's 4096).
            dropout: Dropout probability after the hidden layer (0 disables it).
        """
        c, h, w = _check(input_shape, num_classes, dropout)
        if h < 4 or w < 4:
            raise ValueError(f"BNCNN pools twice by 2, so it needs images of at least 4x4, got {h}x{w}.")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}.")

        def block(cin: int, cout: int) -> list[nn.Module]:
            # No conv bias: BatchNorm's shift replaces it.
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        super().__init__(
            *block(c, 64), *block(64, 64), nn.MaxPool2d(2),  # [N, 64, H/2, W/2]
            *block(64, 128), *block(128, 128), nn.MaxPool2d(2),  # [N, 128, H/4, W/4]
            nn.Flatten(),
            nn.Linear(128 * (h // 4) * (w // 4), hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
