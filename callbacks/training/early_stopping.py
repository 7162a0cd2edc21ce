"""WindowEarlyStopping: the report's rule — stop when the newest validation value improves on none of the last 25.

How it differs from Lightning's `EarlyStopping(patience=p)`: patience compares every value with the *best value
ever seen* and stops after `p` checks without beating it, so one lucky early value (or a spike) fixes the bar
for the rest of training. The window rules only look at the last `window` values, so the bar moves with them:

- `none_improved` (the report's): keep the `window` values before the newest; stop when the newest improves on
  *none* of them, i.e. it is no better than the *worst* of the window. Lenient: a noisy curve that still trends
  the right way almost never stops; a curve that turns (val loss rising, overfitting) stops soon after.
- `no_new_best` (stricter): stop when the newest is not a new best of the window, i.e. it fails to improve on
  *every* one of the `window` values before it (it is no better than their best). It stops whenever
  `none_improved` does, and also on any check that is not a new low (high) of the window: training goes on only
  while each value beats the last `window`. Since training stops at the first such check, this is
  `patience=1` that cannot stop during the first `window` checks (min_delta aside): a strict rule for curves
  that should improve every epoch, far stricter than `patience=window`.

(The other reading of "no new best within the last `window` checks" — no value beating the best ever seen —
is exactly `EarlyStopping(patience=window)`, so it is not repeated here.)

Both need a full window (`window + 1` values) before they can stop, so training runs at least `window + 1`
validation checks. Subclasses Lightning's `EarlyStopping`: its DDP rule (all ranks stop when any rank decides,
`trainer.strategy.reduce_boolean_decision`), its checks for a missing or non-finite metric, and its
checkpointed state, extended with the window.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, Optional

import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from torch import Tensor

RULES = ("none_improved", "no_new_best")


class WindowEarlyStopping(EarlyStopping):
    """Stop training when the monitored metric stops improving within a sliding window of validation checks.

    `rule="none_improved"` stops when the newest value improves on none of the `window` values before it;
    `rule="no_new_best"` stops when it is not better than all of them (no new best of the window). See the module
    docstring for how both differ from `EarlyStopping(patience=...)`. Pair it with the CLI's best checkpoint
    (monitored on the same metric, or on val/acc): `test` after `fit` uses the best checkpoint, not the last.
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        window: int = 25,
        rule: Literal["none_improved", "no_new_best"] = "none_improved",
        min_delta: float = 0.0,
        check_finite: bool = True,
        verbose: bool = False,
    ) -> None:
        """
        Args:
            monitor: Logged metric to watch, e.g. val/loss or val/acc.
            mode: min (lower is better, losses) or max (higher is better, accuracies).
            window: How many earlier validation values the newest is compared with (the report uses 25).
            rule: none_improved (stop when the newest beats none of the window) or no_new_best (stop when the
                newest does not beat all of the window, i.e. is no new best of it; stricter).
            min_delta: A value improves on another only when it is better by more than this.
            check_finite: Stop at once when the metric becomes NaN or infinite.
            verbose: Log why training stops or goes on.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1 (validation checks to compare with), got {window}.")
        if rule not in RULES:
            raise ValueError(f"Unknown rule {rule!r}: choose one of {', '.join(RULES)}.")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}.")
        # patience is unused by the window rules; Lightning keeps it in the checkpointed state.
        super().__init__(monitor=monitor, min_delta=min_delta, patience=window, verbose=verbose, mode=mode,
                         check_finite=check_finite)
        self.window, self.rule, self.delta = window, rule, float(min_delta)
        # The newest value and the `window` before it, oldest first (floats: one .item() per validation).
        self.history: deque[float] = deque(maxlen=window + 1)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, window=self.window, rule=self.rule)

    def _better(self, a: float, b: float) -> bool:
        """`a` improves on `b` by more than min_delta."""
        return a < b - self.delta if self.mode == "min" else a > b + self.delta

    def should_stop(self) -> bool:
        """The rule applied to `self.history` (oldest first); False until the window is full."""
        values = list(self.history)
        if len(values) < self.window + 1:
            return False
        if self.rule == "none_improved":
            return not any(self._better(values[-1], v) for v in values[:-1])
        return not all(self._better(values[-1], v) for v in values[:-1])

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, Optional[str]]:
        if self.check_finite and not torch.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            return True, f"Monitored metric {self.monitor} = {current} is not finite. Signaling Trainer to stop."
        value = float(current)
        self.history.append(value)
        if self._better(value, float(self.best_score)):
            self.best_score = current.detach().cpu().clone()
        if not self.should_stop():
            return False, None
        self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
        if self.rule == "none_improved":
            why = f"{self.monitor} = {value:.4g} improves on none of the {self.window} values before it"
        else:
            why = f"{self.monitor} = {value:.4g} is no new best of the {self.window} values before it"
        return True, f"{why} (rule {self.rule}); best seen {float(self.best_score):.4g}. Signaling Trainer to stop."

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": list(self.history), "window": self.window, "rule": self.rule}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.patience = self.window  # a checkpoint's patience must not override this callback's window
        self.history = deque(state_dict.get("history", []), maxlen=self.window + 1)
