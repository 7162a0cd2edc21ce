"""The from-scratch MLP as a LightningModule: hand-written backward, hand-written SGD, no autograd in the update.

It subclasses `Classifier` for everything that is not training (evaluation steps and their `preds`/`probs`/
`targets` outputs, the `{train,val,test}/{loss,acc}` and `val/acc_best` metrics, per-class metrics), so the
analysis callbacks, the CLI's `num_classes`/`input_shape` links and the run directory work unchanged. Only the
training step differs in kind: manual optimisation with the gradients of `ScratchNet.backward`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from lit_models.modules.classifier import Classifier
from lit_models.nets.scratch_net import Activation, ScratchNet


class HandSGD(torch.optim.Optimizer):
    """Plain SGD written out: p ← p − lr · p.grad (no momentum; L2 is already in the hand-computed grad).

    An optimizer object (not a loop inside the module) so Lightning counts steps (`global_step`, which
    checkpointing and logging go by) and checkpoints the learning rate with its scheduler.
    """

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:  # Lightning's (no-op, in manual optimisation) closure runs its hooks
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(p.grad, alpha=group["lr"])
        return loss


class ScratchMLP(Classifier):
    """Trains a `ScratchNet` (forward and backward by hand) with hand-written SGD and per-epoch LR decay."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (128,),
        activation: Activation = "relu",
        init_std: float = 0.1,
        lr: float = 0.1,
        weight_decay: float = 0.0,
        lr_decay: float = 0.97,
    ) -> None:
        """
        Args:
            num_classes: Number of classes; linked from the data module.
            input_shape: Shape of one input (C, H, W); linked from the data module.
            hidden: Width of each hidden layer, e.g. [128].
            activation: Hidden-layer non-linearity: relu, tanh or sigmoid.
            init_std: Weights start as N(0, init_std) / sqrt(fan_in); biases at 0.
            lr: Learning rate of the hand-written SGD.
            weight_decay: L2 coefficient λ: the loss gains (λ/2)·Σ||W||² over the weights (not the biases), so
                each weight gradient gains λ·W. (torch's SGD `weight_decay` also decays biases.)
            lr_decay: Multiply the learning rate by this after every epoch (the report: 0.97).
        """
        net = partial(ScratchNet, hidden=tuple(hidden), activation=activation, init_std=init_std)
        super().__init__(net=net, num_classes=num_classes, input_shape=input_shape, optimizer="sgd", lr=lr,
                         momentum=0.0, weight_decay=weight_decay, lr_decay=lr_decay)
        self.save_hyperparameters()  # again: record this class's arguments, not Classifier's `net` partial
        self.automatic_optimization = False

    def setup(self, stage: str) -> None:
        # DDP would refuse a module with no trainable parameter, and HandSGD does not all-reduce gradients.
        if self.trainer.world_size > 1:
            raise RuntimeError(f"ScratchMLP trains on one device; got {self.trainer.world_size} processes. "
                               "Set trainer.devices=1 (or use lit_models.Classifier for multi-device runs).")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict:
        x, y = batch  # x: float [B, C, H, W], y: int64 [B]
        logits, cache = self.net.forward_cached(x)  # no tensor here requires grad: no autograd graph
        grads = self.net.backward(logits, cache, y, self.hparams.weight_decay)
        for name, p in self.net.named_parameters():
            p.grad = grads[name]
        opt = self.optimizers()
        opt.step()
        opt.zero_grad()
        # Log plain cross-entropy, as Classifier does (its SGD weight decay is not in the logged loss either).
        loss = self.net.loss(logits, y)
        preds = self.count_train_batch(loss, logits, y)
        # As Classifier.training_step: preds [B] for callbacks (train confusion matrix, learning curves' accuracy).
        return {"loss": loss, "preds": preds}

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.lr_schedulers().step()  # manual optimisation: Lightning leaves the schedule to us

    def configure_optimizers(self) -> Any:
        opt = HandSGD(self.net.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt,
                "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.hparams.lr_decay)}
