"""The one LightningModule that trains every classifier net: loss, metrics, logging (optimiser: OptimizedModule)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.contract import require
from lit_models.checkpointing import check_checkpoint_matches
from lit_models.modules.class_metrics import PerClassMetrics, log_reduced
from lit_models.nets import MLP, DataInitializedNet, Net
from lit_models.losses.weighting import Weighting
from lit_models.modules.optimization import OptimizedModule
from runtime.lightning_private import CURRENT_FX_NAME, precompute_signature

# What the CLI's `model.net` builds: class_path + init_args of a net, called with (input_shape, num_classes).
NetFactory = Callable[[Sequence[int], int], Net]
_PLAIN_ATTRS = frozenset({CURRENT_FX_NAME, "_train_count"})


class Classifier(OptimizedModule):
    """Trains any `nn.Module` classifier with cross-entropy and logs `{train,val,test}/{loss,acc}`.

    Metrics are logged once per epoch: per-step `self.log` calls and torchmetrics updates cost more than the
    step of a small MLP (a torchmetrics update is ~50 `nn.Module.__setattr__` calls). Training sums
    (loss, correct, count) go into one tensor per step and feed the torchmetrics once per epoch, whose
    `compute()` syncs DDP ranks; evaluation updates torchmetrics per (large) batch. Callbacks that want
    per-step values read `outputs["loss"]` (or `outputs["ce"]`, the unweighted cross-entropy) in
    `on_train_batch_end`.
    """

    def __init__(
        self,
        net: NetFactory = MLP,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        weighting: Weighting | None = None,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            net: The network: `class_path` of an nn.Module whose first two arguments are (input_shape,
                num_classes), plus its other `init_args`, e.g. `lit_models.MLP` with `hidden: [128, 64]`.
            num_classes: Number of classes; linked from the data module.
            input_shape: Shape of one input (C, H, W); linked from the data module.
            weighting: How much each training example counts (`lit_models.losses.weighting`: ClassWeights, Focal,
                OHEM, ConfidenceWeights, SelfPaced, Compose); None = plain mean cross-entropy. Val/test losses
                stay plain cross-entropy so runs with different weightings compare.
            label_smoothing: Training targets put this much probability on the other classes (e.g. 0.2 in the
                fast CIFAR-10 recipe); val/test losses stay plain cross-entropy.
            **kwargs: The optimiser and schedule (`OptimizedModule`: optimizer, lr, momentum, weight_decay,
                lr_decay, schedule, warmup, nesterov).
        """
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        super().__init__(**kwargs)  # validates them and saves every argument as hparams
        self.label_smoothing = label_smoothing
        self.weighting = weighting
        self.net = net(tuple(input_shape), num_classes)
        self.example_input_array = torch.zeros(2, *input_shape)
        metric = dict(num_classes=num_classes, average="micro", validate_args=False)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MeanMetric()
        self.val_acc, self.test_acc = MulticlassAccuracy(**metric), MulticlassAccuracy(**metric)
        # [loss sum, correct] of the running training epoch (+ `_train_count` examples, a Python int).
        self.register_buffer("train_sums", torch.zeros(2), persistent=False)
        self._train_count = 0
        self.val_acc_best = MaxMetric()
        self._resumed_best: Tensor | None = None  # a resumed run's best val/acc so far (on_load_checkpoint)
        # Per-class recall and macro-F1 of val/test (eval steps only), to see what happens to rare classes.
        self.val_classes, self.test_classes = PerClassMetrics(num_classes), PerClassMetrics(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits `[N, num_classes]`, for one-logit binary nets too (see `binary_logits`)."""
        z = self.net(x)
        return self.binary_logits(z) if z.shape[-1] == 1 else z

    def binary_logits(self, z: Tensor) -> Tensor:
        """A one-logit net's z `[N, 1]` (log-odds of class 1) as two-class logits `[N, 2]` = [-z/2, z/2]. Their
        softmax is [1 - sigmoid(z), sigmoid(z)], argmax is sigmoid(z) > 0.5, and cross-entropy on them equals
        BCE-with-logits(z) exactly (log softmax([-z/2, z/2])_1 = log sigmoid(z)); so the binary case shares
        every step, metric, weighting and callback (they all call the module) with the multi-class one."""
        if self.hparams.num_classes != 2:
            raise ValueError(f"The net outputs one logit (binary) but the data has {self.hparams.num_classes} "
                             "classes: choose two with data.classes, e.g. [cat, dog].")
        return torch.cat([-z / 2, z / 2], dim=-1)

    # -- per-step overhead (docs/performance.md) -----------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets the current hook's name (CURRENT_FX_NAME) twice around every hook call (~25 times a step); nn.Module's
        # __setattr__ scans its parameter/buffer/module dicts each time. These names are plain attributes.
        if name in _PLAIN_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)

    def training_loss(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(the loss to minimise, the batch's plain mean cross-entropy, detached) — the same tensor when unweighted.

        The second is what `DivergenceGuard` watches: weightings shrink the first by design (self-paced drops the
        hard examples, focal the easy ones), not the second. The default path stays one fused mean cross-entropy;
        per-example losses only when weighting is set.
        """
        if self.weighting is None:
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            return loss, loss
        losses = F.cross_entropy(logits, y, reduction="none", label_smoothing=self.label_smoothing)  # [B]
        return self.weighting.reduce(losses, y, self.current_epoch), losses.detach().mean()

    def on_fit_start(self) -> None:
        if isinstance(self.net, DataInitializedNet) and not self.net.initialized:
            # The same first images of the (seeded) training split on every DDP rank, so ranks agree.
            data = require(self.trainer, f"{type(self.net).__name__}.init_from_data", "split_tensors")
            x, _ = data.split_tensors("train", limit=self.net.data_examples)
            self.net.init_from_data(x.to(self.device))
        if self.weighting is not None:
            # Class counts come from the data module (LitlabData); bare dataloaders give None (ClassWeights refuses).
            who = f"{type(self).__name__}'s weighting {type(self.weighting).__name__}"
            has_data = self.trainer.datamodule is not None
            self.weighting.setup(require(self.trainer, who, "train_class_counts").train_class_counts()
                                 if has_data else None)

    # -- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict:
        x, y = batch
        logits = self(x)
        loss, ce = self.training_loss(logits, y)
        preds = self.count_train_batch(loss, logits, y)
        # preds (already computed, on device) for callbacks: train confusion matrix, learning curves' accuracy;
        # ce (the unweighted mean cross-entropy) for DivergenceGuard.
        return {"loss": loss, "ce": ce, "preds": preds}

    @torch.no_grad()
    def count_train_batch(self, loss: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        """Add one batch to the epoch's training sums (logged as train/loss, train/acc at epoch end).

        Returns the batch's predicted classes [B], which training steps hand to callbacks.
        """
        # In place and without torch.stack: 2 small ops a step instead of 7 plus a Module.__setattr__.
        n, preds = len(y), logits.argmax(-1)
        sums = self.train_sums
        sums[0].add_(loss, alpha=n)
        sums[1].add_((preds == y).sum())
        self._train_count += n
        return preds

    def on_train_epoch_end(self) -> None:
        (loss_sum, correct), n = self.train_sums, self._train_count
        if n > 0:
            self.train_loss.update(loss_sum / n, weight=n)
            self.train_acc.update(correct / n, weight=n)
            self.train_sums.zero_()
            self._train_count = 0
            self._log_epoch("train", self.train_loss, self.train_acc)

    # -- evaluation ---------------------------------------------------------------------------------------
    def _eval_step(self, batch: tuple[Tensor, Tensor], loss_metric: MeanMetric, acc: MulticlassAccuracy) -> dict:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        loss_metric.update(loss, weight=len(y))
        acc.update(logits, y)
        probs = logits.softmax(-1)
        # What callbacks need (confusion matrices, galleries), so they never re-run the model.
        return {"loss": loss, "preds": probs.argmax(-1), "probs": probs, "targets": y}

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity check's value
        if self._resumed_best is not None:  # ... but not a resumed run's best so far
            self.val_acc_best.update(self._resumed_best)

    # -- exact resume: state that is not in the state_dict (callbacks/training/checkpoint.py) ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = self.val_acc_best.max_value
        checkpoint["litlab"] = {"train_sums": self.train_sums.cpu().clone(), "train_count": self._train_count,
                                "val_acc_best": best.cpu().clone() if torch.isfinite(best) else None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_matches(self, checkpoint, dict(self.hparams))  # before Lightning's strict load
        extra = checkpoint.get("litlab", {})
        if "train_sums" in extra:
            self.train_sums.copy_(extra["train_sums"])  # a mid-epoch resume keeps the epoch's running sums
            self._train_count = int(extra.get("train_count", 0))
        self._resumed_best = extra.get("val_acc_best")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict:
        out = self._eval_step(batch, self.val_loss, self.val_acc)
        self.val_classes.update(out["preds"], out["targets"])
        return out

    def on_validation_epoch_end(self) -> None:
        self._log_classes("val", self.val_classes)
        acc = self._log_epoch("val", self.val_loss, self.val_acc)
        self.val_acc_best.update(acc)
        log_reduced(self, {"val/acc_best": self.val_acc_best.compute()})  # the max of synced values

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict:
        out = self._eval_step(batch, self.test_loss, self.test_acc)
        self.test_classes.update(out["preds"], out["targets"])
        return out

    def on_test_epoch_end(self) -> None:
        self._log_classes("test", self.test_classes)
        self._log_epoch("test", self.test_loss, self.test_acc)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(-1)

    def _log_epoch(self, stage: str, loss: MeanMetric, acc: MeanMetric | MulticlassAccuracy) -> Tensor:
        # compute() syncs across DDP ranks, so the logged values cover the whole split.
        values = {f"{stage}/loss": loss.compute(), f"{stage}/acc": acc.compute()}
        log_reduced(self, values, prog_bar=stage != "test")
        loss.reset()
        acc.reset()
        return values[f"{stage}/acc"]

    def _log_classes(self, stage: str, metrics: PerClassMetrics) -> None:
        has_data = self._trainer is not None and self.trainer.datamodule is not None  # else: classes by index
        names = require(self.trainer, self, "class_names").class_names if has_data else None
        log_reduced(self, metrics.compute(stage, names))
        metrics.reset()


# Lightning re-derives training_step's signature with inspect at every step (to see whether it takes batch_idx);
# a precomputed one makes that ~6x cheaper. Subclasses that override training_step are unaffected.
precompute_signature(Classifier.training_step)
