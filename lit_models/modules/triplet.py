"""TripletEncoder: learns an embedding with a triplet margin loss on triplets mined from labelled batches.

Training differs in kind from classification (no logits, a loss over triples), so it has its own module; the
encoder itself is any litlab net built as `encoder(input_shape, embedding_dim)` — `lit_models.MLP` for MNIST,
the batch-norm CNN for CIFAR-10 — stored as `self.net`, so its checkpoint keys (`net.*`) are those of a
`Classifier` and `lit_models.EncoderClassifierNet` loads either.

Progress is measured by k-NN accuracy: each val/test embedding is classified by the labels of its `knn_k`
nearest neighbours among `reference_size` training embeddings (computed at the start of every val/test epoch
from `datamodule.split_tensors("train")`). `val/acc` is an alias of `val/knn_acc`, so checkpointing by
`val/acc` keeps the encoder that clusters classes best.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.contract import require
from lit_models.losses.mining import Mining, mine_triplets
from lit_models.modules.optimization import OptimizedModule, OptimizerName
from lit_models.modules.class_metrics import log_reduced
from lit_models.nets import MLP

# `encoder(input_shape, embedding_dim)`: any litlab net whose output size is its second argument.
EncoderFactory = Callable[[Sequence[int], int], nn.Module]


def knn_votes(queries: Tensor, ref: Tensor, ref_labels: Tensor, k: int, num_classes: int,
              exclude_self: bool = False) -> Tensor:
    """Fraction of the k nearest reference embeddings in each class: float [Q, num_classes].

    queries [Q, D], ref [R, D], ref_labels [R]. `exclude_self` (queries == ref) drops each point's own match
    (leave-one-out).
    """
    dist = torch.cdist(queries, ref)  # [Q, R]
    if exclude_self:
        dist.fill_diagonal_(float("inf"))
    k = min(k, ref.shape[0] - int(exclude_self))
    nearest = dist.topk(k, largest=False).indices  # [Q, k]
    return F.one_hot(ref_labels[nearest], num_classes).float().mean(1)


class TripletEncoder(OptimizedModule):
    """Trains `encoder` with `nn.TripletMarginLoss` on mined triplets; logs loss, active triplets, k-NN acc."""

    def __init__(
        self,
        encoder: EncoderFactory = MLP,
        embedding_dim: int = 64,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        normalize: bool = True,
        margin: float = 0.2,
        mining: Mining = "semi_hard",
        knn_k: int = 5,
        reference_size: int = 5000,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            encoder: The encoder net: `class_path` of an nn.Module built as (input_shape, embedding_dim), plus its
                `init_args`, e.g. `lit_models.MLP` with `hidden: [512, 256]`.
            embedding_dim: Size of the embedding (the encoder's output).
            num_classes: Number of classes (for k-NN accuracy); linked from the data module.
            input_shape: Shape of one input (C, H, W); linked from the data module.
            normalize: L2-normalise embeddings (they lie on the unit sphere: distances in [0, 2], so margins
                around 0.1–0.5); False leaves them unbounded (the report's margins of 1 and 50).
            margin: Triplet margin: loss = max(0, d(a,p) - d(a,n) + margin).
            mining: random (any valid triplet), batch_hard (farthest positive, nearest negative per anchor) or
                semi_hard (per positive pair, the nearest negative farther than the positive).
            knn_k: Neighbours voting in the k-NN accuracy.
            reference_size: Training examples (seeded subset) whose embeddings the k-NN classifier searches.
            optimizer: sgd (with `momentum`), adam or adamw.
            lr: Learning rate.
            **kwargs: The rest of the optimiser and schedule (`OptimizedModule`: momentum, weight_decay,
                lr_decay, schedule, warmup, nesterov).
        """
        super().__init__(optimizer=optimizer, lr=lr, **kwargs)  # validates them and saves every argument as hparams
        if margin < 0 or embedding_dim < 1 or knn_k < 1 or reference_size < 1:
            raise ValueError(f"Need margin >= 0, embedding_dim, knn_k, reference_size >= 1; got "
                             f"{margin}, {embedding_dim}, {knn_k}, {reference_size}.")
        if mining not in ("random", "batch_hard", "semi_hard"):
            raise ValueError(f"Unknown mining {mining!r}: choose random, batch_hard or semi_hard.")
        self.net = encoder(tuple(input_shape), embedding_dim)
        self.criterion = nn.TripletMarginLoss(margin=margin, reduction="none")
        self.example_input_array = torch.zeros(2, *input_shape)
        self.train_loss, self.train_active = MeanMetric(), MeanMetric()
        metric = dict(num_classes=num_classes, average="micro", validate_args=False)
        self.val_acc, self.test_acc = MulticlassAccuracy(**metric), MulticlassAccuracy(**metric)
        self.val_acc_best = MaxMetric()
        self._reference: tuple[Tensor, Tensor] | None = None  # (embeddings [R, D], labels [R]) of this epoch

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings [B, embedding_dim], on the unit sphere when `normalize`."""
        z = self.net(x).flatten(1)
        return F.normalize(z, dim=1) if self.hparams.normalize else z

    def triplet_loss(self, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(mean loss over mined triplets, fraction of them with loss > 0); both 0 when none can be formed."""
        a, p, n = mine_triplets(z, y, self.hparams.mining)
        if len(a) == 0:  # one class in the batch: nothing to push apart; keep the graph so backward works
            return z.sum() * 0.0, z.new_zeros(())
        losses = self.criterion(z[a], z[p], z[n])  # [T]
        return losses.mean(), (losses.detach() > 0).float().mean()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss, active = self.triplet_loss(self(x), y)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_active.update(active, weight=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        log_reduced(self, {"train/loss": self.train_loss.compute(), "train/active_triplets": self.train_active.compute()},
                      prog_bar=True)
        self.train_loss.reset()
        self.train_active.reset()

    # -- evaluation: k-NN against training embeddings -------------------------------------------------------
    @torch.no_grad()
    def embed_reference(self) -> tuple[Tensor, Tensor] | None:
        """Embeddings and labels of a seeded subset of the training split, or None without a litlab data module."""
        if self._trainer is None or self.trainer.datamodule is None:
            return None
        x, y = require(self.trainer, self, "split_tensors").split_tensors("train")
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[: self.hparams.reference_size]
        keep = keep.to(y.device)
        was_training = self.training
        self.eval()
        z = torch.cat([self(b.to(self.device)) for b in x[keep].split(1000)])
        self.train(was_training)
        return z, y[keep].to(self.device)

    def on_validation_epoch_start(self) -> None:
        self._reference = self.embed_reference()

    def on_test_epoch_start(self) -> None:
        self._reference = self.embed_reference()

    def _eval_step(self, batch: tuple[Tensor, Tensor], acc: MulticlassAccuracy) -> dict[str, Tensor]:
        x, y = batch
        z = self(x)
        num_classes, k = self.hparams.num_classes, self.hparams.knn_k
        if self._reference is not None:
            votes = knn_votes(z, *self._reference, k, num_classes)
        else:  # no training split to search: leave-one-out within the batch
            votes = knn_votes(z, z, y, k, num_classes, exclude_self=True)
        acc.update(votes, y)
        # What callbacks need: the embeddings (EmbeddingProjection) and k-NN votes as class probabilities.
        return {"embeddings": z, "probs": votes, "preds": votes.argmax(-1), "targets": y}

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity check's value

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.val_acc_best.update(acc)
        log_reduced(self, {"val/knn_acc": acc, "val/acc": acc, "val/acc_best": self.val_acc_best.compute()},
                      prog_bar=True)
        self._reference = None

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, self.test_acc)

    def on_test_epoch_end(self) -> None:
        acc = self.test_acc.compute()
        self.test_acc.reset()
        log_reduced(self, {"test/knn_acc": acc, "test/acc": acc})
        self._reference = None
