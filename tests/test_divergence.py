"""DivergenceGuard: a NaN or exploding loss stops the run with a clear message, status "diverged", and the
checkpoints keep the weights from before the blow-up."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from callbacks.training.divergence import Diverged, DivergenceGuard
from cli import cli_main
from datamodules import MNIST
from helpers import BASE
from lit_models import MLP, Classifier
from lit_models.losses import SelfPaced


def tiny(mnist_dir: Path, *extra: str) -> list[str]:
    # 500 training examples in batches of 32: 16 steps an epoch.
    return ["fit", *BASE, "--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--data.download", "false",
            "--data.batch_size", "32", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
            "--model.net.hidden", "[16]", *extra]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(mnist_dir):
    with pytest.raises(SystemExit) as stop:
        cli_main(tiny(mnist_dir, "--trainer.callbacks+=helpers.faults.NaNAtStep", "--trainer.callbacks.step", "20"))
    message = str(stop.value.code)
    assert message.startswith("litlab: training diverged at step 21 (epoch 1, learning rate 0.1)")
    assert "the training loss became nan" in message and "--model.lr 0.01" in message
    assert "--trainer.gradient_clip_val" in message
    run = Path("runs/default/version_0")
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "diverged" and results["step"] == 21 and results["lr"] == 0.1
    assert "test/acc" not in results  # a diverged run reports no number to compare
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 17  # after the first step of epoch 1; nothing was saved after the NaN
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    for ckpt in (last, best):
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


@pytest.mark.parametrize("lr, momentum", [("1000", "0"), ("1", "0.9")])
def test_an_absurd_learning_rate_is_caught(mnist_dir, lr, momentum):
    # lr 1 is base.yaml's recipe (SGD, momentum 0.9, [128, 64]) ten times too fast: a plain, unweighted run.
    with pytest.raises(SystemExit, match=rf"training diverged at step \d+ .*learning rate {float(lr)}\)"):
        cli_main(tiny(mnist_dir, "--model.lr", lr, "--model.momentum", momentum, "--model.net.hidden", "[128, 64]"))
    assert json.loads(Path("runs/default/version_0/results.json").read_text())["status"] == "diverged"


def test_the_guard_flags_explosions_against_the_running_median_and_can_be_turned_off(mnist_dir):
    guard = DivergenceGuard(factor=10, window=5, warmup_steps=3)

    class Trainer:  # the two things the guard reads
        global_step, current_epoch, optimizers = 0, 0, [torch.optim.SGD([torch.zeros(1)], lr=0.5)]

    trainer = Trainer()
    for step, loss in enumerate([2.0, 1.5, 1.2, 1.0, 0.9, 5.0], start=1):  # 5.0 < 10 × median: a bump, fine
        trainer.global_step = step
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)
    trainer.global_step = 7
    with pytest.raises(Diverged, match=r"step 7 .*jumped to 50, more than 10 × its running median 1.2"):
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(50.0)}, None, 0)
    assert guard.diverged and guard.report == {"step": 7, "epoch": 0, "lr": 0.5, "loss": 50.0}
    off = cli_main(tiny(mnist_dir, "--trainer.callbacks+=helpers.faults.NaNAtStep", "--trainer.callbacks.step", "20",
                        "--divergence.enabled", "false", "--trainer.max_epochs", "2", "--test_after_fit", "false"))
    assert off.trainer.global_step == 32  # ran on with NaN weights, as asked
    with pytest.raises(ValueError, match="factor > 1"):
        DivergenceGuard(factor=0.5)


def test_a_self_paced_run_whose_weighted_loss_is_near_zero_is_not_stopped():
    # Self-paced learning leaves out the examples above its threshold, so the loss it minimises sits at ~0 for
    # stretches and then jumps when an example is admitted ("jumped to 0.066, more than 1000 × its running median
    # 1.65e-06" stopped the README's comparison). The guard watches the batch's plain cross-entropy instead.
    torch.manual_seed(0)
    model = Classifier(net=lambda s, k: MLP(s, k, hidden=[8]), weighting=SelfPaced(threshold=1e-3, warmup_epochs=0))
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    guard = DivergenceGuard()  # the CLI's defaults: factor 1000, window 50, 10 warm-up steps

    class Trainer:
        global_step, current_epoch, optimizers = 0, 0, [torch.optim.SGD(model.parameters(), lr=0.1)]

    trainer = Trainer()
    for step in range(1, 41):  # every example above the threshold: the weighted loss is exactly 0
        trainer.global_step = step
        out = model.training_step((x, y), step)
        assert out["loss"] == 0 and torch.allclose(out["ce"], F.cross_entropy(model(x), y))
        guard.on_train_batch_end(trainer, model, out, (x, y), step)
    model.weighting.threshold = math.inf  # every example admitted: the weighted loss jumps from 0 to ~2.3
    trainer.global_step = 41
    guard.on_train_batch_end(trainer, model, model.training_step((x, y), 41), (x, y), 41)
    assert not guard.diverged
    trainer.global_step = 42  # a real explosion of the cross-entropy still stops the run, weighted or not
    with pytest.raises(Diverged, match="jumped to 5000"):
        guard.on_train_batch_end(trainer, model, {"loss": torch.tensor(0.0), "ce": torch.tensor(5000.0)}, None, 42)


def test_an_ordinary_batch_after_a_near_zero_stretch_is_no_explosion():
    # A curriculum's easiest quarter takes the running median of the cross-entropy to ~2e-5; the first batch of the
    # wider pool (0.067, measured on noisy MNIST) is 3000 × that, and nothing has diverged.
    guard = DivergenceGuard()  # floor 1.0: a loss below it is never an explosion

    class Trainer:
        global_step, current_epoch, optimizers = 0, 1, [torch.optim.SGD([torch.zeros(1)], lr=0.1)]

    trainer = Trainer()
    for step, ce in [*((s, 1.9e-5) for s in range(1, 61)), (61, 0.067)]:
        trainer.global_step = step
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(ce), "ce": torch.tensor(ce)}, None, 0)
    assert not guard.diverged
    trainer.global_step = 62
    with pytest.raises(Diverged, match=r"jumped to 30, more than 1000 × its running median 1.9e-05"):
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(30.0), "ce": torch.tensor(30.0)}, None, 0)


def test_interrupted_and_failed_runs_say_so_in_results_json(mnist_dir):
    fault = ["--trainer.callbacks+=helpers.faults.RaiseAtStep", "--trainer.callbacks.step", "20"]
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful Ctrl-C shutdown ends in sys.exit(1)
            cli_main(tiny(mnist_dir, *fault))
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores further Ctrl-C; undo that
    results = json.loads(Path("runs/default/version_0/results.json").read_text())
    assert results["status"] == "interrupted" and results["global_step"] == 20
    with pytest.raises(RuntimeError, match="a bug in a callback"):  # bugs keep their traceback
        cli_main(tiny(mnist_dir, *fault, "--trainer.callbacks.what", "RuntimeError"))
    results = json.loads(Path("runs/default/version_1/results.json").read_text())
    assert results["status"] == "failed" and results["message"] == "RuntimeError: a bug in a callback"


class NaNOnRankOne(L.Callback):
    """Make rank 1's weights NaN after step 3: only that rank's loss goes NaN at step 4."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == 3 and trainer.global_rank == 1:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


@pytest.mark.timeout(600)  # subprocesses / several processes: a longer limit than the default
@pytest.mark.slow  # two processes
@pytest.mark.parametrize("sync_every", [None, 6])  # every step on a CPU; a GPU's deferred read, read at step 6
def test_ddp_ranks_stop_together_when_one_diverges(mnist_dir, sync_every):
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, batch_size=25, download=False)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[NaNOnRankOne(), DivergenceGuard(sync_every=sync_every)])
    # Rank 1 sees the NaN, rank 0 does not: without agreeing, rank 0 would wait for rank 1 forever. Both name
    # step 4, the NaN's own step, even when it is read two steps later.
    with pytest.raises(Exception, match=r"training diverged at step 4 .*(became nan|another DDP rank)"):
        trainer.fit(Classifier(), dm)
