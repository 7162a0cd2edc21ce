"""CollapseGuard: a model at chance or on one class for `patience` validation checks ends `collapsed`, not
`finished`, with one litlab: line; chance comes from the validation split's class counts."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from callbacks.training.collapse import Collapsed, CollapseGuard
from cli import cli_main
from helpers import BASE


def tiny(mnist_dir: Path, *extra: str) -> list[str]:
    # 500 training examples in batches of 32, 100 for validation; one validation check per epoch.
    return ["fit", *BASE, "--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--data.download", "false",
            "--data.batch_size", "32", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
            *extra]


def test_a_net_that_predicts_one_class_ends_collapsed_with_one_clear_line(mnist_dir):
    with pytest.raises(SystemExit) as stop:
        cli_main(tiny(mnist_dir, "--model.net", "helpers.faults.OneClassNet"))
    message = str(stop.value.code)
    assert "\n" not in message
    assert message.startswith("litlab: the model collapsed: for 3 validation checks in a row (epochs 0–2)")
    assert "100% of its predictions were class 0" in message and "--model.lr 0.01" in message
    run = Path("runs/default/version_0")
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "collapsed" and results["message"] == message.removeprefix("litlab: ")
    assert "test/acc" not in results  # like a diverged run: no number to compare as if it were a result
    # Chance is what always predicting the most common class of *this* validation split scores.
    from datamodules import MNIST

    val = MNIST(data_dir=str(mnist_dir), val_size=100, download=False).class_counts("val")
    chance = float(val.max()) / float(val.sum())
    assert [c["chance"] for c in results["collapse"]] == pytest.approx([chance] * 3)
    assert f"always predicting the most common class: {chance:.3f}" in message
    assert [c["acc"] for c in results["collapse"]] == pytest.approx([float(val[0]) / 100] * 3)


def test_a_learning_run_is_not_flagged_and_the_guard_can_be_turned_off(mnist_dir):
    ok = cli_main(tiny(mnist_dir, "--model.net.hidden", "[16]", "--test_after_fit", "false"))
    assert json.loads((Path(ok.trainer.log_dir) / "results.json").read_text())["status"] == "finished"
    off = cli_main(tiny(mnist_dir, "--model.net", "helpers.faults.OneClassNet", "--collapse.enabled", "false",
                        "--test_after_fit", "false"))
    assert json.loads((Path(off.trainer.log_dir) / "results.json").read_text())["status"] == "finished"


class FakeData:
    num_classes, class_names = 2, ["cat", "dog"]

    def __init__(self, val_counts: list[int]) -> None:
        self.counts = torch.tensor(val_counts)

    def class_counts(self, split: str) -> torch.Tensor:
        assert split == "val"
        return self.counts


def check(guard: CollapseGuard, trainer: SimpleNamespace, preds: list[int], targets: list[int]) -> None:
    guard.on_validation_epoch_start(trainer, None)
    guard.on_validation_batch_end(trainer, None, {"preds": torch.tensor(preds), "targets": torch.tensor(targets)},
                                  None, 0)
    guard.on_validation_end(trainer, None)
    trainer.current_epoch += 1


def test_chance_comes_from_the_class_counts_and_a_healthy_check_resets_the_streak():
    # A validation split of 80 cats and 20 dogs: always "cat" scores 0.8, so 0.81 is chance here (not 1/2).
    trainer = SimpleNamespace(datamodule=FakeData([80, 20]), sanity_checking=False, current_epoch=0,
                              state=SimpleNamespace(fn="fit"), strategy=SimpleNamespace(reduce=lambda t, **_: t))
    targets = [0] * 80 + [1] * 20
    at_chance = [0] * 70 + [1] * 10 + [1] * 11 + [0] * 9  # 81 % right, 79 % of predictions "cat" (< one_class)
    healthy = [0] * 80 + [1] * 15 + [0] * 5  # 95 % right
    guard = CollapseGuard(patience=2, margin=0.02, one_class=0.9)
    check(guard, trainer, at_chance, targets)
    check(guard, trainer, healthy, targets)  # the streak starts again
    check(guard, trainer, at_chance, targets)
    assert len(guard.streak) == 1 and guard.streak[0]["chance"] == pytest.approx(0.8)
    with pytest.raises(Collapsed, match=r"epochs 2–3\) its accuracy was 0.810 .*: 0.800\) and 79% .* class cat"):
        check(guard, trainer, at_chance, targets)
    # The same 81 % on a balanced split is far above chance (0.5): no collapse.
    trainer.datamodule = FakeData([50, 50])
    guard = CollapseGuard(patience=1)
    check(guard, trainer, at_chance, targets)
    assert guard.streak == []
    with pytest.raises(ValueError, match="patience >= 1"):
        CollapseGuard(patience=0)
