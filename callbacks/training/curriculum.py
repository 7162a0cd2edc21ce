"""Curriculum learning: train on the easiest examples first and admit harder ones on a pacing schedule.

Difficulty is each training example's cross-entropy under a scoring model: a reference checkpoint of the same
net (scored at fit start), or the model being trained after `warmup_epochs` of ordinary epochs. At pacing
epoch t the shuffled training epoch draws only from the easiest `fraction(t)` of the split (Hacohen &
Weinshall 2019, "On the power of curriculum learning"); the fraction grows to 1 after `pace_epochs`. The data
is never copied: the callback hands the easiest positions to the training batches' `set_pool` (an index
schedule on the in-memory split); an epoch keeps its number of steps, drawing repeated shuffled passes over
the pool while it is partial, so runs with and without a curriculum take the same number of steps.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from datamodules.base import TensorBatches
from datamodules.contract import require


class Curriculum(Callback):
    """Easy-to-hard data order for `datamodules.*` training splits; logs `train/curriculum_fraction`."""

    def __init__(
        self,
        reference_checkpoint: str | None = None,
        warmup_epochs: int = 1,
        start_fraction: float = 0.25,
        pace_epochs: int = 3,
        pacing: Literal["linear", "root"] = "linear",
        per_class: bool = True,
        score_batch_size: int = 4096,
    ) -> None:
        """
        Args:
            reference_checkpoint: A checkpoint of the same model (e.g. an earlier run's best.ckpt) whose loss
                ranks the examples. None: rank them by the trained model's own loss after `warmup_epochs`.
            warmup_epochs: Ordinary (whole-split) epochs before scoring with the model's own loss (>= 1;
                ignored with a reference checkpoint).
            start_fraction: Fraction of the easiest examples available in the first pacing epoch, in (0, 1].
            pace_epochs: Pacing epochs until every example is available (the fraction reaches 1).
            pacing: linear (start + (1 − start)·t/T) or root (sqrt(start² + (1 − start²)·t/T), Platanios et
                al. 2019: fast early growth).
            per_class: Take the easiest fraction of each class (by training label), so the early pool keeps
                the class balance of the split; False ranks all examples together (easy classes crowd out hard
                ones, and the early model may never see some classes).
            score_batch_size: Examples per forward pass when scoring the split.
        """
        if not 0.0 < start_fraction <= 1.0:
            raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction}.")
        if pace_epochs < 1 or score_batch_size < 1:
            raise ValueError(f"pace_epochs and score_batch_size must be >= 1, got {pace_epochs}, {score_batch_size}.")
        if reference_checkpoint is None and warmup_epochs < 1:
            raise ValueError("Scoring by the model's own loss needs warmup_epochs >= 1 (or give reference_checkpoint).")
        if pacing not in ("linear", "root"):
            raise ValueError(f"Unknown pacing {pacing!r}: choose 'linear' or 'root'.")
        self.reference_checkpoint, self.warmup_epochs = reference_checkpoint, warmup_epochs
        self.start_fraction, self.pace_epochs, self.pacing = start_fraction, pace_epochs, pacing
        self.per_class, self.score_batch_size = per_class, score_batch_size
        self.scores: Tensor | None = None  # float32 [N_train] difficulty (loss) per training example, on CPU
        self.labels: Tensor | None = None  # int64 [N_train] their training labels (for per_class)

    # -- the schedule ---------------------------------------------------------------------------------------
    def pacing_epoch(self, epoch: int) -> int | None:
        """Epoch of the pacing schedule at trainer epoch `epoch`; None while warming up."""
        offset = 0 if self.reference_checkpoint is not None else self.warmup_epochs
        return None if epoch < offset else epoch - offset

    def fraction(self, t: int) -> float:
        """Fraction of the easiest examples available at pacing epoch t (1.0 from t = pace_epochs on)."""
        progress = min(1.0, t / self.pace_epochs)
        s = self.start_fraction
        if self.pacing == "root":
            return math.sqrt(s * s + (1.0 - s * s) * progress)
        return s + (1.0 - s) * progress

    def pool(self, scores: Tensor, t: int, labels: Tensor | None = None) -> Tensor | None:
        """Positions of the easiest ceil(fraction(t)·n) examples (n: the split, or each class of `labels`),
        easiest first; None once all are in."""
        f = self.fraction(t)
        if f >= 1.0:
            return None
        order = torch.sort(scores, stable=True).indices  # ties keep split order, so the pool is deterministic
        if labels is None:
            return order[: math.ceil(f * len(scores))]
        ranked = labels[order]
        parts = [order[ranked == c][: math.ceil(f * int((ranked == c).sum()))] for c in labels.unique()]
        merged = torch.cat(parts)
        return merged[torch.sort(scores[merged], stable=True).indices]

    # -- hooks -----------------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = trainer.train_dataloader
        if not isinstance(batches, TensorBatches):
            raise TypeError(
                f"Curriculum needs litlab's in-memory training batches (datamodules.*), got {type(batches).__name__}."
            )
        t = self.pacing_epoch(trainer.current_epoch)
        if t is None:
            batches.set_pool(None)
            pl_module.log("train/curriculum_fraction", 1.0)
            return
        if self.scores is None:
            self.scores, self.labels = self.score(trainer, pl_module)
        batches.set_pool(self.pool(self.scores, t, self.labels if self.per_class else None))
        pl_module.log("train/curriculum_fraction", min(1.0, self.fraction(t)))

    @torch.no_grad()
    def score(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor, Tensor]:
        """Cross-entropy `float32 [N]` of every training example (split order) under the scoring net, and
        the examples' labels `int64 [N]`, both on CPU."""
        net = getattr(pl_module, "net", None)
        if not isinstance(net, nn.Module):
            raise TypeError("Curriculum scores with the module's `net` (as in lit_models.Classifier); this has none.")
        if self.reference_checkpoint is not None:
            net = self._load_reference(net)
        x, y = require(trainer, self, "split_tensors").split_tensors("train")
        was_training = net.training
        net.eval()
        # A one-logit net's z [B, 1] as two-class logits [B, 2], as the module's forward does (Classifier.
        # binary_logits), so the score is its BCE; the reference net is not the module's, so not forward itself.
        to_logits = getattr(pl_module, "binary_logits", None)

        def logits(xb: Tensor) -> Tensor:
            z = net(xb)
            return to_logits(z) if to_logits is not None and z.shape[-1] == 1 else z

        losses = [F.cross_entropy(logits(xb), yb, reduction="none")
                  for xb, yb in zip(x.split(self.score_batch_size), y.split(self.score_batch_size))]
        net.train(was_training)
        return torch.cat(losses).float().cpu(), y.cpu()

    def _load_reference(self, net: nn.Module) -> nn.Module:
        # Safe loading: litlab's checkpoints (hyper-parameters included) are plain tensors and types.
        ckpt = torch.load(self.reference_checkpoint, map_location="cpu", weights_only=True)
        state = {k[len("net."):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("net.")}
        reference = copy.deepcopy(net)
        try:
            reference.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"reference_checkpoint {self.reference_checkpoint} does not hold this model's net (same class and "
                f"sizes needed): {err}"
            ) from err
        return reference

    # -- resuming mid-curriculum keeps the ranking -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "labels": self.labels}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scores, self.labels = state_dict.get("scores"), state_dict.get("labels")
