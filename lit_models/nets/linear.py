"""Regression heads: softmax regression (one Linear to every class) and binary logistic regression (one logit).

`Classifier` trains both. A net whose output is `[N, 1]` is a binary classifier: the logit z is the log-odds of
class 1, the loss is BCE-with-logits and the prediction is class 1 when sigmoid(z) > 0.5 (see
`Classifier.binary_logits`). L2 regularisation is the optimiser's `weight_decay`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from lit_models.nets.mlp import Net


class SoftmaxRegression(nn.Sequential, Net):
    """Flatten → Linear(C·H·W, num_classes): multinomial logistic regression, trained with cross-entropy."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> None:
        """
        Args:
            input_shape: Shape of one input (C, H, W); linked from the data module.
            num_classes: Number of classes; linked from the data module.
        """
        if num_classes < 2:
            raise ValueError(f"SoftmaxRegression needs >= 2 classes, got {num_classes}.")
        super().__init__(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


class LogisticRegression(nn.Sequential, Net):
    """Flatten → Linear(C·H·W, 1): one logit, the log-odds of class 1 of a two-class data set."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 2) -> None:
        """
        Args:
            input_shape: Shape of one input (C, H, W); linked from the data module.
            num_classes: Must be 2 (linked from the data module): pick two classes with `data.classes`,
                e.g. `[cat, dog]`.
        """
        if num_classes != 2:
            raise ValueError(
                f"LogisticRegression is binary but the data has {num_classes} classes: choose two with "
                "data.classes (e.g. --data.classes '[cat, dog]'), or use SoftmaxRegression for more."
            )
        super().__init__(nn.Flatten(), nn.Linear(math.prod(input_shape), 1))
