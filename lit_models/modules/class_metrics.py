"""Per-class recall and macro-F1 for evaluation: what an overall accuracy hides about rare classes."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import lightning as L
from torch import Tensor, nn
from torchmetrics.classification import MulticlassF1Score, MulticlassRecall


class PerClassMetrics(nn.Module):
    """`<stage>/f1_macro` and `<stage>/recall/<class name>` over a whole split (DDP-synced at `compute`).

    Updated once per evaluation batch (large batches), never per training step.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.recall = MulticlassRecall(num_classes, average=None, validate_args=False)
        self.f1 = MulticlassF1Score(num_classes, average="macro", validate_args=False)

    def update(self, preds: Tensor, targets: Tensor) -> None:
        """`preds`, `targets`: int64 [B] predicted and true classes."""
        self.recall.update(preds, targets)
        self.f1.update(preds, targets)

    def compute(self, stage: str, class_names: Sequence[str] | None = None) -> dict[str, Tensor]:
        names = list(class_names) if class_names and len(class_names) == self.num_classes else None
        names = names or [str(c) for c in range(self.num_classes)]
        recall = self.recall.compute()  # [num_classes]
        values = {f"{stage}/f1_macro": self.f1.compute()}
        # "/" inside a class name (Fashion-MNIST's "T-shirt/top") would read as another metric level.
        values.update({f"{stage}/recall/{name.replace('/', '-')}": r for name, r in zip(names, recall)})
        return values

    def reset(self) -> None:
        self.recall.reset()
        self.f1.reset()


def log_reduced(module: L.LightningModule, values: dict[str, Tensor], **kwargs: object) -> None:
    """`module.log_dict(values)` for epoch values that torchmetrics' `compute()` has already reduced over DDP ranks
    (every rank holds the whole split's value). Lightning cannot know that and advises `sync_dist=True`, which would
    only average identical numbers with one more collective each; its warning is silenced for these names only,
    so a metric logged elsewhere without reduction still gets it."""
    for name in values:
        warnings.filterwarnings("ignore", message=re.escape(f"It is recommended to use `self.log({name!r}, ..., "
                                                            "sync_dist=True)`"))
    module.log_dict(values, **kwargs)
