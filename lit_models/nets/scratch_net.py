"""An MLP written from scratch: forward and backward by hand with tensor ops, weights saved as `.npz`.

The parameters are plain tensors `W1, b1, W2, b2, …` (`W_l`: [fan_in, fan_out], `b_l`: [fan_out]) registered as
`nn.Parameter(requires_grad=False)`: no autograd graph is ever built for them, yet they travel with the module
(`.to(device)`, `state_dict`, Lightning checkpoints, the model summary). `lit_models.ScratchMLP` trains it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from runtime.files import write_atomic
from lit_models.nets.mlp import ACTIVATIONS

Activation = Literal["relu", "tanh", "sigmoid"]


def _act_grad(name: str, a: Tensor) -> Tensor:
    """d act / d z written from the activation's OUTPUT `a` (what forward cached), so z need not be kept."""
    if name == "relu":
        return (a > 0).to(a.dtype)
    if name == "tanh":
        return 1 - a * a
    return a * (1 - a)


class ScratchNet(nn.Module):
    """Flatten → [x @ W + b → activation] × len(hidden) → x @ W + b (softmax + cross-entropy in `backward`)."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        hidden: Sequence[int] = (128,),
        activation: Activation = "relu",
        init_std: float = 0.1,
    ) -> None:
        """
        Args:
            input_shape: Shape of one input, e.g. (1, 28, 28); flattened to prod(input_shape) features.
            num_classes: Number of outputs.
            hidden: Width of each hidden layer, e.g. [128]; [] gives softmax regression.
            activation: Hidden-layer non-linearity: relu, tanh or sigmoid.
            init_std: Weights start as N(0, init_std) / sqrt(fan_in) (the report's init); biases start at 0.
        """
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}: choose relu, tanh or sigmoid.")
        if any(h < 1 for h in hidden) or num_classes < 1:
            raise ValueError(f"Layer widths must be >= 1, got hidden={list(hidden)}, num_classes={num_classes}.")
        self.activation = activation
        # The non-linearities as modules (nn.ReLU, …) only so forward hooks (callbacks.HiddenRepresentations)
        # see the hidden layers; their derivatives are written by hand in `backward`.
        self.acts = nn.ModuleList(ACTIVATIONS[activation]() for _ in hidden)
        self.sizes = [math.prod(input_shape), *hidden, num_classes]
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            w = torch.randn(fan_in, fan_out) * (init_std / math.sqrt(fan_in))
            self.register_parameter(f"W{i}", nn.Parameter(w, requires_grad=False))
            self.register_parameter(f"b{i}", nn.Parameter(torch.zeros(fan_out), requires_grad=False))

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    def weights(self) -> list[tuple[Tensor, Tensor]]:
        return [(getattr(self, f"W{i}"), getattr(self, f"b{i}")) for i in range(1, self.num_layers + 1)]

    def first_layer_weight(self) -> Tensor:
        """W1 in nn.Linear's layout [units, inputs] = [fan_out, prod(input_shape)] (callbacks.WeightTemplates)."""
        return self.W1.T

    # -- forward / backward -------------------------------------------------------------------------------
    def forward_cached(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits [B, num_classes] and the cache backward needs: the input of every layer, [B, fan_in] each
        (the flattened x, then each hidden activation's output)."""
        a = x.reshape(len(x), -1)
        cache = [a]
        for i, (w, b) in enumerate(self.weights(), start=1):
            z = torch.addmm(b, a, w)  # b + a @ w: [B, fan_out]
            if i == self.num_layers:
                return z, cache
            a = self.acts[i - 1](z)
            cache.append(a)
        raise AssertionError("unreachable: a net has at least one layer")

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_cached(x)[0]

    def loss(self, logits: Tensor, y: Tensor, weight_decay: float = 0.0) -> Tensor:
        """Mean softmax cross-entropy + (weight_decay / 2) · Σ_l ||W_l||² (biases are not penalised)."""
        log_probs = logits - logits.logsumexp(-1, keepdim=True)
        ce = -log_probs.gather(1, y[:, None]).mean()
        if weight_decay:
            ce = ce + 0.5 * weight_decay * sum((w * w).sum() for w, _ in self.weights())
        return ce

    def backward(self, logits: Tensor, cache: list[Tensor], y: Tensor, weight_decay: float = 0.0) -> dict[str, Tensor]:
        """Gradients of `loss(logits, y, weight_decay)` by hand: {"W1": [fan_in, fan_out], "b1": [fan_out], …}.

        d loss / d logits = (softmax − one_hot) / B; then per layer, from the top: dW = a_inᵀ · dz,
        db = Σ_batch dz, and dz of the layer below = (dz · Wᵀ) ⊙ act'(a_in).
        """
        if logits.shape[0] != len(y) or len(cache) != self.num_layers:
            raise ValueError(f"backward got logits {tuple(logits.shape)}, {len(y)} labels and {len(cache)} cached "
                             f"inputs for a {self.num_layers}-layer net; pass what forward_cached returned.")
        dz = logits.softmax(-1)
        dz[torch.arange(len(y), device=y.device), y] -= 1
        dz /= len(y)  # [B, num_classes]
        grads: dict[str, Tensor] = {}
        for i in range(self.num_layers, 0, -1):
            w = getattr(self, f"W{i}")
            a_in = cache[i - 1]  # [B, fan_in]
            grads[f"W{i}"] = a_in.T @ dz + weight_decay * w if weight_decay else a_in.T @ dz
            grads[f"b{i}"] = dz.sum(0)
            if i > 1:
                dz = (dz @ w.T) * _act_grad(self.activation, a_in)
        return grads

    # -- .npz weights ---------------------------------------------------------------------------------------
    def save_npz(self, path: str | Path) -> Path:
        """Write W1, b1, W2, b2, … as float arrays to `path` (atomically: a crash never leaves half a file)."""
        buf = io.BytesIO()
        np.savez(buf, **{name: p.detach().cpu().numpy() for name, p in self.named_parameters()})
        return write_atomic(Path(path), buf.getvalue())

    @torch.no_grad()
    def load_npz(self, path: str | Path) -> None:
        """Load weights saved by `save_npz` (or the report's code) into this net; the file must hold exactly
        this net's arrays with the same shapes. Object arrays are refused (`allow_pickle=False`)."""
        expected = {name: tuple(p.shape) for name, p in self.named_parameters()}
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except ValueError as err:  # numpy's "Object arrays cannot be loaded when allow_pickle=False"
            raise ValueError(f"{path}: {err}. Save plain float arrays (ScratchNet.save_npz does).") from err
        bad = [k for k, a in arrays.items() if a.dtype.kind not in "fiu"]
        if bad:
            raise ValueError(f"{path}: arrays {bad} are not numbers ({[str(arrays[k].dtype) for k in bad]}).")
        got = {k: tuple(a.shape) for k, a in arrays.items()}
        if got != expected:
            raise ValueError(f"{path} does not fit this net: it holds {got}, the net needs {expected} "
                             f"(sizes {self.sizes}). Build the net with the same hidden sizes and data shape.")
        for name, a in arrays.items():
            getattr(self, name).copy_(torch.from_numpy(a))
