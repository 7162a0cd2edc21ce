"""StepMetrics: the learning rate (`lr`) and the training loss (`train/loss_step`) every `log_every_n_steps`.

The classification module logs `train/loss` once per epoch (per-step `self.log` costs more than a small MLP's
step, docs/performance.md); a curve within an epoch, and the learning rate a schedule sets, come from here.
Every `trainer.log_every_n_steps` training batches it reads the step's loss (one `.item()`, the only device
sync it adds) and the optimisers' learning rates, and hands them to every logger in one `log_metrics` call
(one row of metrics.csv, one W&B history step), at step = the batch's index over the run (as Lightning's
`LearningRateMonitor` does). Between those steps it costs one integer test. Under DDP the loss is rank
zero's batch (an all-reduce every N steps would add a collective); the epoch's `train/loss` covers all ranks.

Why not `LearningRateMonitor` itself: it names the series `lr-SGD`, `lr-Adam`, ... unless every module names a
scheduler, so runs of different recipes would not share one `lr` series; and a callback listed under
`trainer.callbacks` in base.yaml is replaced by any experiment config that lists its own. The CLI installs
this one under its own key (`--step_metrics.*`), like checkpointing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from torch import Tensor

from runtime.lightning_private import batches_processed_in_run


class StepMetrics(L.Callback):
    """Logs `lr` (`lr/pg<k>` for more parameter groups, `lr/opt<i>/pg<k>` for more optimisers) and `train/loss_step`."""

    def __init__(self, enabled: bool = True, loss: bool = True) -> None:
        """
        Args:
            enabled: Log the learning rate (and the loss) every `trainer.log_every_n_steps` training batches.
            loss: Also log the training loss of that batch as `train/loss_step` (the module's `train/loss` is the
                epoch mean).
        """
        self.enabled, self.loss = enabled, loss
        self._rates: dict[str, float] | None = None  # set at the start of a batch that logs, used at its end

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # The rates this batch trains with: by its end, an epoch's last batch already sees the next epoch's.
        done = batches_processed_in_run(trainer)  # batches before this one, over the run
        self._rates = learning_rates(trainer) if self._due(trainer, done + 1) else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        metrics, self._rates = self._rates, None
        if metrics is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if self.loss and isinstance(loss, Tensor):
            metrics["train/loss_step"] = float(loss.detach())
        step = batches_processed_in_run(trainer) - 1  # this batch's index over the run
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def _due(self, trainer: L.Trainer, batches: int) -> bool:
        return self.enabled and bool(trainer.loggers) and batches % max(trainer.log_every_n_steps, 1) == 0

def learning_rates(trainer: L.Trainer) -> dict[str, float]:
    """The current learning rate of every optimiser's parameter groups: `lr`, `lr/pg2`, ..., `lr/opt1/pg1`, ..."""
    out = {}
    for i, opt in enumerate(trainer.optimizers):
        for k, group in enumerate(opt.param_groups):
            name = "lr" if (i, k) == (0, 0) else f"lr/pg{k + 1}" if i == 0 else f"lr/opt{i}/pg{k + 1}"
            out[name] = float(group["lr"])
    return out
