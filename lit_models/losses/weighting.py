"""Sample weighting: how much each training example counts in the loss. `Classifier(weighting=...)` uses one.

Every strategy works on a batch's per-example cross-entropy `losses [B]` and per-example `weights [B]`
(all ones to start) and may change either; the batch loss is then `sum(weights * losses) / B`, so each
example's gradient is exactly its weight times the gradient plain cross-entropy gives it (weight 1 = plain CE),
and a dropped example (OHEM, self-paced) simply contributes nothing. Not `/ sum(weights)` (the normalisation of
`F.cross_entropy(weight=...)`): that multiplies every kept example's gradient by B / sum(weights) — 4× under
OHEM's 25 %, ~20× under confidence weights once 95 % of a batch is classified well — exactly when the weights
concentrate on a few examples, and at the base recipe's lr 0.1 × momentum 0.9 those steps knocked the net onto
one class (measured in docs/sample_weighting.md). `Compose` chains strategies, e.g. class weights × focal loss.

Strategies see `epoch` (for schedules) and, through `setup`, the training split's class counts; they hold no
tensors the optimiser sees and nothing of them is saved in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


class Weighting:
    """Base class: subclasses implement `apply`; `Classifier` calls the object with (logits, targets, epoch)."""

    def setup(self, class_counts: Tensor | None) -> None:
        """Called at fit start with the training split's `int64 [num_classes]` label counts (None if unknown)."""

    def apply(self, losses: Tensor, weights: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        """Map per-example `losses [B]` (cross-entropy so far) and `weights [B]` to new ones."""
        raise NotImplementedError

    def __call__(self, logits: Tensor, y: Tensor, epoch: int) -> Tensor:
        return self.reduce(F.cross_entropy(logits, y, reduction="none"), y, epoch)

    def reduce(self, losses: Tensor, y: Tensor, epoch: int) -> Tensor:
        """The batch loss from per-example cross-entropy `losses [B]` (p_true = exp(-loss) needs no softmax)."""
        losses, weights = self.apply(losses, torch.ones_like(losses), y, epoch)
        return (weights * losses).mean()  # / B, not / sum(weights): see the module docstring

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class ClassWeights(Weighting):
    """Weight each example by its class's weight, from the training split's class frequencies.

    `inverse`: w_c ∝ 1 / n_c. `effective` (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
    Samples"): w_c ∝ (1 − β) / (1 − β^n_c), which interpolates between no weighting (β = 0) and inverse
    frequency (β → 1). Weights are scaled to average 1 over the classes present.
    """

    def __init__(self, mode: Literal["inverse", "effective"] = "inverse", beta: float = 0.999) -> None:
        """
        Args:
            mode: inverse (1 / n_c) or effective (the effective number of samples, (1 − β) / (1 − β^n_c)).
            beta: β of the effective number, in [0, 1); ignored by inverse.
        """
        if mode not in ("inverse", "effective"):
            raise ValueError(f"Unknown mode {mode!r}: choose 'inverse' or 'effective'.")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}.")
        self.mode, self.beta = mode, beta
        self._class_weights: Tensor | None = None

    def setup(self, class_counts: Tensor | None) -> None:
        if class_counts is None:
            raise ValueError(
                "ClassWeights needs the training split's class counts, but the data module has no "
                "train_class_counts(): use one of litlab's data modules (datamodules.*)."
            )
        self._class_weights = class_weights(class_counts, self.mode, self.beta)

    @property
    def class_weights(self) -> Tensor:
        if self._class_weights is None:
            raise RuntimeError("ClassWeights.setup(class_counts) has not been called (Classifier calls it at fit start).")
        return self._class_weights

    def apply(self, losses: Tensor, weights: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        w = self.class_weights
        if w.device != y.device:
            self._class_weights = w = w.to(y.device)  # once: the strategy learns the device from its first batch
        return losses, weights * w[y]


def class_weights(counts: Tensor, mode: str = "inverse", beta: float = 0.999) -> Tensor:
    """`float32 [C]` class weights from `counts [C]`; classes with no examples get weight 0 (never targets)."""
    n = counts.double()
    present = n > 0
    if mode == "inverse":
        w = torch.where(present, 1.0 / n.clamp_min(1), torch.zeros_like(n))
    else:
        w = torch.where(present, (1.0 - beta) / (1.0 - torch.pow(torch.full_like(n, beta), n)), torch.zeros_like(n))
    return (w * present.sum() / w.sum()).float()


class Focal(Weighting):
    """Focal loss (Lin et al. 2017): FL = −α_y (1 − p_y)^γ log p_y, down-weighting well-classified examples.

    γ = 0 and no α is plain cross-entropy. The focal factor is part of the loss (it is differentiated through).
    """

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | None = None) -> None:
        """
        Args:
            gamma: Focusing parameter γ >= 0 (0 = cross-entropy; the paper uses 2).
            alpha: Optional per-class weights α_c, one per class (e.g. from `ClassWeights`, or by hand).
        """
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        if alpha is not None and any(a < 0 for a in alpha):
            raise ValueError(f"alpha must be non-negative per-class weights, got {list(alpha)}.")
        self.gamma = gamma
        self.alpha = None if alpha is None else list(alpha)
        self._alpha: Tensor | None = None

    def setup(self, class_counts: Tensor | None) -> None:
        if self.alpha is not None and class_counts is not None and len(self.alpha) != len(class_counts):
            raise ValueError(f"Focal alpha has {len(self.alpha)} entries but there are {len(class_counts)} classes.")

    def apply(self, losses: Tensor, weights: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        if self.gamma != 0:
            p_true = torch.exp(-losses)
            losses = (1.0 - p_true).pow(self.gamma) * losses
        if self.alpha is not None:
            if self._alpha is None or self._alpha.device != y.device:
                self._alpha = torch.tensor(self.alpha, device=y.device, dtype=losses.dtype)
            weights = weights * self._alpha[y]
        return losses, weights


class OHEM(Weighting):
    """Online hard-example mining: back-propagate only the k highest-loss examples of each batch."""

    def __init__(self, fraction: float = 0.25, count: int | None = None) -> None:
        """
        Args:
            fraction: Keep this fraction of each batch, in (0, 1] (at least one example).
            count: Keep exactly this many examples per batch instead (overrides fraction).
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1 (or None to use fraction), got {count}.")
        self.fraction, self.count = fraction, count

    def k(self, batch_size: int) -> int:
        k = self.count if self.count is not None else round(self.fraction * batch_size)
        return min(max(k, 1), batch_size)

    def apply(self, losses: Tensor, weights: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        # Rank by the loss as weighted so far (so class weights × OHEM mines the weighted-hard examples).
        top = (weights * losses).detach().topk(self.k(len(losses))).indices
        keep = torch.zeros_like(weights).index_fill_(0, top, 1.0)
        return losses, weights * keep


class ConfidenceWeights(Weighting):
    """Weight each example by (1 − p_true)^β, a constant (no gradient flows through the weight).

    Unlike focal loss the weight is an importance weight, not part of the loss: the gradient of each example is
    its cross-entropy gradient scaled by how unsure the model is about it; the batch mean is over the weights.
    """

    def __init__(self, beta: float = 1.0) -> None:
        """
        Args:
            beta: Exponent β >= 0 of (1 − p_true); 0 = cross-entropy, larger = more weight on hard examples.
        """
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}.")
        self.beta = beta

    def apply(self, losses: Tensor, weights: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        w = (1.0 - torch.exp(-losses.detach())).pow(self.beta)
        return losses, weights * w


class SelfPaced(Weighting):
    """Self-paced learning (Kumar et al. 2010, hard weights): ignore examples whose loss exceeds λ_t.

    λ_t = λ_0 · growth^t at epoch t (counted after `warmup_epochs` of plain cross-entropy), so training starts
    on the easy examples and admits harder ones as the threshold grows; examples the model keeps getting very
    wrong (often mislabelled ones) stay out longest. Without a warm-up, a net that first learns a few classes
    can shut the others out for good (their loss stays above λ), hence the one warm-up epoch by default.
    """

    def __init__(self, threshold: float = 2.5, growth: float = 1.3, warmup_epochs: int = 1) -> None:
        """
        Args:
            threshold: λ_0, the loss above which an example is ignored in the first self-paced epoch. An
                untrained net's cross-entropy is about ln(num_classes) (2.3 for 10 classes): without a warm-up
                keep λ_0 above it.
            growth: Multiply the threshold by this after every epoch (>= 1).
            warmup_epochs: Epochs of plain cross-entropy (every example counts) before self-pacing starts.
        """
        if threshold <= 0 or growth < 1 or warmup_epochs < 0:
            raise ValueError(f"Need threshold > 0, growth >= 1 and warmup_epochs >= 0, got threshold={threshold}, "
                             f"growth={growth}, warmup_epochs={warmup_epochs}.")
        self.threshold, self.growth, self.warmup_epochs = threshold, growth, warmup_epochs

    def threshold_at(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return math.inf
        return self.threshold * self.growth ** (epoch - self.warmup_epochs)

    def apply(self, losses: Tensor, weights: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        keep = (losses.detach() <= self.threshold_at(epoch)).to(weights.dtype)
        return losses, weights * keep


class Compose(Weighting):
    """Apply several strategies in order, e.g. `[ClassWeights, Focal]` = class-balanced focal loss."""

    def __init__(self, parts: Sequence[Weighting]) -> None:
        """
        Args:
            parts: The strategies, applied in this order (each sees the losses and weights of the one before).
        """
        if not parts:
            raise ValueError("Compose needs at least one strategy in parts.")
        self.parts = list(parts)

    def setup(self, class_counts: Tensor | None) -> None:
        for part in self.parts:
            part.setup(class_counts)

    def apply(self, losses: Tensor, weights: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        for part in self.parts:
            losses, weights = part.apply(losses, weights, y, epoch)
        return losses, weights
