"""FastCNN: an airbench-style convolutional net that reaches ~90 % on CIFAR-10 in a few CPU minutes.

After Keller Jordan's airbench (github.com/KellerJordan/cifar10-airbench, `airbench94`: 94 % in seconds on an A100),
scaled down for a laptop CPU (configs/fast_cnn_cifar10.yaml; docs/performance.md has the measurements):

* a frozen 2x2 **whitening** conv, set from the training images' patch covariance before the first step
  (`init_from_data`, called by `Classifier.on_fit_start`) — the first layer starts out decorrelating pixels,
  which a learned layer would take epochs to do;
* three conv groups `conv3x3 → max-pool 2 → BN → GELU → conv3x3 → BN → GELU`, convs initialised as identity
  (dirac) on their first channels so the net starts close to a shallow one;
* BatchNorm without a scale (only the shift trains; the next conv absorbs scale) and a small output scale (1/9)
  so the large learning rate of the recipe stays stable;
* optional flip **test-time augmentation**: in eval mode the logits average the image and its mirror.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_models.nets.cnn import _Sequential
from lit_models.nets.mlp import Net


class DataInitializedNet(Net):
    """A net with weights computed from training images before training (`Classifier.on_fit_start` calls
    `init_from_data` once; `initialized` is a saved buffer, so a resumed or reloaded net is not re-initialised)."""

    data_examples: int = 5000  # how many training images init_from_data wants

    def init_from_data(self, images: Tensor) -> None:  # images: normalised float [N, C, H, W]
        raise NotImplementedError

    @property
    def initialized(self) -> bool:
        raise NotImplementedError


class _Conv(nn.Conv2d):
    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data  # [out, in, k, k]: identity on the first `in` output channels
        nn.init.dirac_(w[: w.size(1)])


def _norm(channels: int) -> nn.BatchNorm2d:
    # airbench's BN: momentum 0.6 in its convention (PyTorch's 0.4), tiny eps, no trainable scale.
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


def _group(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_Conv(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), _norm(cout), nn.GELU(),
                         _Conv(cout, cout, 3, padding=1, bias=False), _norm(cout), nn.GELU())


class FastCNN(_Sequential, DataInitializedNet):
    """whiten 2x2 → GELU → 3 conv groups (`widths`) → global max-pool → Linear → × `scale`.

    32x32x3 → [N, 24, 31, 31] → [N, w1, 15, 15] → [N, w2, 7, 7] → [N, w3, 3, 3] → [N, w3] → [N, num_classes].
    """

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                 widths: Sequence[int] = (32, 64, 128), scale: float = 1 / 9, tta: bool = True) -> None:
        """
        Args:
            input_shape: Shape of one input (C, H, W); linked from the data module. H and W must be >= 9.
            num_classes: Number of outputs; linked from the data module.
            widths: Channels of the three conv groups: (32, 64, 128) for a CPU, airbench's (64, 256, 256) on a GPU.
            scale: Multiplies the logits (airbench's 1/9: keeps early outputs small under a large learning rate).
            tta: In eval mode, average the logits of each image and its horizontal mirror (costs 2x at eval).
        """
        if (len(input_shape) != 3 or min(input_shape[1:]) < 9 or len(widths) != 3 or min(widths) < 1
                or num_classes < 1):
            raise ValueError(f"FastCNN needs input_shape (C, H, W) with H, W >= 9, three widths >= 1 and "
                             f"num_classes >= 1; got {list(input_shape)}, {list(widths)}, {num_classes}.")
        c, (w1, w2, w3) = int(input_shape[0]), (int(v) for v in widths)
        whiten = nn.Conv2d(c, 2 * c * 4, 2, bias=True)  # ± each of the c·2·2 patch eigenvectors
        whiten.weight.requires_grad_(False)  # fixed by init_from_data; its bias trains
        super().__init__(whiten, nn.GELU(), _group(2 * c * 4, w1), _group(w1, w2), _group(w2, w3),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w3, num_classes, bias=False))
        self.scale, self.tta = scale, tta
        self.register_buffer("whitened", torch.tensor(False))

    @property
    def initialized(self) -> bool:
        return bool(self.whitened)

    @torch.no_grad()
    def init_from_data(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the whitening conv from the 2x2 patches of `images` (normalised float [N, C, H, W])."""
        conv = self[0]
        c, k = images.shape[1], conv.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # [N, C, H-1, W-1, k, k]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)  # [P, C·k·k]
        cov = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(cov)  # ascending; vectors in columns
        filters = (vectors.T / torch.sqrt(values + eps)[:, None]).reshape(-1, c, k, k)  # [C·k·k, C, k, k]
        conv.weight.copy_(torch.cat([filters, -filters]))
        self.whitened.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        logits = super().forward(x) * self.scale
        if self.tta and not self.training:
            logits = (logits + super().forward(x.flip(-1)) * self.scale) / 2
        return logits
