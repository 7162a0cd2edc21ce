"""EncoderFinetuning: the three transfer baselines — scratch, linear probe, fine-tune — as one callback.

It acts on the model's backbone (`net.encoder` of `lit_models.EncoderClassifierNet` by default),
through Lightning's `BaseFinetuning`, so the training step stays the shared `Classifier`'s:

- `scratch`: the backbone is re-initialised (its checkpoint weights discarded) and trained with the head at
  the full learning rate — the same architecture, no transfer.
- `linear_probe`: the backbone is frozen for the whole run: no gradients, eval mode (BatchNorm normalises
  with the pretrained running statistics and never updates them; dropout off); only the head learns.
- `finetune`: the backbone is frozen for `unfreeze_at_epoch` epochs (a probe warm-up; 0 = none), then
  trained as its own optimiser param group at `backbone_lr_scale` × the head's learning rate.

`OptimizedModule.configure_optimizers` (Classifier, TripletEncoder) optimises only parameters that require
gradients, so the frozen backbone is not in the optimiser until this callback adds it.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim import Optimizer

from lit_models.nets.transfer import EncoderClassifierNet

# Per-group values that schedulers store in every param group when they are built (OneCycleLR: initial/max/min
# learning rate and, with cycle_momentum, the momentum range; ExponentialLR & co: initial_lr). A group added
# later lacks them: OneCycleLR's next step raises KeyError 'initial_lr'. Learning rates scale with the group.
_SCALED_KEYS = ("initial_lr", "max_lr", "min_lr")
_COPIED_KEYS = ("max_momentum", "base_momentum")


def frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def fill_schedule_keys(trainer: L.Trainer, lr_scale: float) -> None:
    """Give param groups added after the schedulers were built (by this callback) the schedulers' per-group
    keys, taken from the first group with learning rates × `lr_scale`, so e.g. a onecycle backbone group
    follows the head's schedule at `lr_scale` times its learning rate. Keys a group has (restored) are kept."""
    for config in trainer.lr_scheduler_configs:
        groups = config.scheduler.optimizer.param_groups
        for group in groups[1:]:
            for key in _SCALED_KEYS + _COPIED_KEYS:
                if key in groups[0] and key not in group:
                    group[key] = groups[0][key] * lr_scale if key in _SCALED_KEYS else groups[0][key]
        base_lrs = getattr(config.scheduler, "base_lrs", None)  # one per group (closed forms, state_dict)
        if isinstance(base_lrs, list):
            base_lrs.extend(g.get("initial_lr", g["lr"]) for g in groups[len(base_lrs):])


class EncoderFinetuning(BaseFinetuning):
    """Freeze / unfreeze / re-initialise the model's backbone for the scratch, linear_probe and finetune baselines."""

    def __init__(
        self,
        mode: Literal["scratch", "linear_probe", "finetune"] = "finetune",
        unfreeze_at_epoch: int = 0,
        backbone_lr_scale: float = 0.1,
        backbone: str = "net.encoder",
    ) -> None:
        """
        Args:
            mode: scratch (re-initialise the backbone, train all), linear_probe (frozen backbone, BatchNorm
                statistics included) or finetune (train all; the backbone at a scaled learning rate).
            unfreeze_at_epoch: finetune only: train the head alone for this many epochs first.
            backbone_lr_scale: finetune only: backbone learning rate = this × the head's (1 = the same).
            backbone: Attribute path of the backbone inside the LightningModule.
        """
        super().__init__()
        if mode not in ("scratch", "linear_probe", "finetune"):
            raise ValueError(f"Unknown mode {mode!r}: choose scratch, linear_probe or finetune.")
        if unfreeze_at_epoch < 0 or backbone_lr_scale <= 0:
            raise ValueError(f"Need unfreeze_at_epoch >= 0 and backbone_lr_scale > 0, got {unfreeze_at_epoch} "
                             f"and {backbone_lr_scale}.")
        self.mode, self.unfreeze_at_epoch = mode, unfreeze_at_epoch
        self.backbone_lr_scale, self.backbone_path = backbone_lr_scale, backbone

    def backbone(self, pl_module: L.LightningModule) -> nn.Module:
        try:
            return pl_module.get_submodule(self.backbone_path)
        except AttributeError:
            raise AttributeError(
                f"EncoderFinetuning: {type(pl_module).__name__} has no submodule {self.backbone_path!r}. Use "
                "model.net: lit_models.EncoderClassifierNet (its backbone is net.encoder), or set "
                "backbone to the attribute path of yours."
            ) from None

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        backbone = self.backbone(pl_module)
        if self.mode == "scratch":
            # Discard the checkpoint's weights (seeded by seed_everything); runs only when fitting starts.
            if pl_module.trainer.state.fn == "fit":
                for m in backbone.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
            return
        net = getattr(pl_module, "net", None)
        if isinstance(net, EncoderClassifierNet) and not net.pretrained and pl_module.trainer.state.fn == "fit":
            rank_zero_warn(f"EncoderFinetuning(mode={self.mode!r}): the backbone was loaded from no checkpoint, so "
                           "it is randomly initialised; set model.net.checkpoint to a pretrained litlab .ckpt.")
        # Frozen from the start in both other modes: finetune adds it back at unfreeze_at_epoch.
        self.freeze(backbone, train_bn=False)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        backbone = self.backbone(pl_module)
        # `>=` and the frozen check, not `==`: a run resumed after the unfreezing epoch gets requires_grad back
        # (its param group is restored from the checkpoint; unfreeze_and_add_param_group skips duplicates).
        if self.mode == "finetune" and epoch >= self.unfreeze_at_epoch and frozen(backbone):
            lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_scale
            self.unfreeze_and_add_param_group(backbone, optimizer, lr=lr, train_bn=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function
        fill_schedule_keys(trainer, self.backbone_lr_scale)
        # A frozen backbone runs in eval mode: BatchNorm normalises with the pretrained running statistics (as at
        # test time, not each batch's) and dropout is off, so the head sees the features the backbone will give.
        backbone = self.backbone(pl_module)
        backbone.train(pl_module.training and not frozen(backbone))
