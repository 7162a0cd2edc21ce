"""WindowEarlyStopping: the report's window rules against Lightning's patience, and its state across a resume."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

from callbacks import WindowEarlyStopping
from helpers.tiny_runs import Scripted, trainer


def stop_epoch(values: list[float], callback: L.Callback, **kwargs) -> int | None:
    """The epoch after which training stopped (None: ran through every value)."""
    t = trainer(max_epochs=len(values), callbacks=[callback], num_sanity_val_steps=0, **kwargs)
    t.fit(Scripted(values))
    return None if t.current_epoch == len(values) else t.current_epoch - 1


# With window 3: the newest is compared with the 3 values before it.
FALLING_THEN_NOISY = [5, 4, 3, 2, 2.5, 2.4, 2.3, 2.2, 2.9, 1, 1, 1]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_none_improved_stops_when_the_newest_beats_none_of_the_window(mode):
    sign = 1 if mode == "min" else -1
    values = [sign * v for v in FALLING_THEN_NOISY]
    cb = WindowEarlyStopping(monitor="val/loss", mode=mode, window=3, rule="none_improved")
    # e4: 2.5 beats 4 of [4, 3, 2]; e5-e7 each beat one; e8: 2.9 beats none of [2.4, 2.3, 2.2] -> stop.
    assert stop_epoch(values, cb) == 8 and cb.stopped_epoch == 8
    assert list(cb.history) == pytest.approx([sign * v for v in (2.4, 2.3, 2.2, 2.9)])
    # Lightning's patience compares with the best ever (2 at e3): it stops at e6 on the same curve.
    assert stop_epoch(values, EarlyStopping(monitor="val/loss", mode=mode, patience=3)) == 6


@pytest.mark.parametrize("mode", ["min", "max"])
def test_no_new_best_stops_on_the_first_value_that_is_not_a_window_best(mode):
    sign = 1 if mode == "min" else -1
    cb = lambda: WindowEarlyStopping(monitor="val/loss", mode=mode, window=3, rule="no_new_best")  # noqa: E731
    # Never before the window is full: e1's 6 is worse than e0 but only 1 value precedes it.
    values = [sign * v for v in [5, 6, 4, 3, 2, 1.5, 1.6, 1, 1]]
    assert stop_epoch(values, cb()) == 6  # e6: 1.6 does not beat 1.5 of [3, 2, 1.5]
    assert stop_epoch([sign * v for v in FALLING_THEN_NOISY], cb()) == 4  # 2.5 is not below 2
    assert stop_epoch([sign * v for v in [4, 3, 2, 1, 0.5, 0.25]], cb()) is None  # a new best every epoch


def test_min_delta_and_non_finite():
    cb = WindowEarlyStopping(window=2, rule="no_new_best", min_delta=0.5)
    assert stop_epoch([5, 4, 3, 2.6, 1, 0], cb) == 3  # 2.6 beats 3 by only 0.4
    assert stop_epoch([5, 4, math.nan, 3], WindowEarlyStopping(window=2)) == 2
    with pytest.raises(ValueError, match="Unknown rule 'x'"):
        WindowEarlyStopping(rule="x")
    with pytest.raises(ValueError, match="window must be >= 1"):
        WindowEarlyStopping(window=0)


def test_window_state_survives_checkpoint_and_resume(tmp_path):
    values = FALLING_THEN_NOISY
    first = WindowEarlyStopping(window=3)
    t = trainer(tmp_path, max_epochs=6, callbacks=[first], num_sanity_val_steps=0)
    model = Scripted(values)
    t.fit(model)
    ckpt = tmp_path / "six.ckpt"
    t.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["callbacks"][first.state_key]
    assert state["history"] == pytest.approx([3.0, 2.0, 2.5, 2.4]) and state["window"] == 3
    # A fresh callback resumed from the checkpoint stops at e8, as an uninterrupted run does.
    resumed = WindowEarlyStopping(window=3)
    t = trainer(tmp_path, max_epochs=len(values), callbacks=[resumed], num_sanity_val_steps=0)
    t.fit(Scripted(values), ckpt_path=ckpt)
    assert list(resumed.history) == pytest.approx([2.4, 2.3, 2.2, 2.9]) and resumed.stopped_epoch == 8
    copy = WindowEarlyStopping(window=3)
    copy.load_state_dict(resumed.state_dict())
    assert copy.state_dict()["history"] == resumed.state_dict()["history"] and copy.best_score == 2.0


# -- confusion matrix ---------------------------------------------------------------------------------------
