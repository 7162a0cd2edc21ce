"""Data parallelism: per-rank shards (equal sizes, full coverage), and a two-process CPU run (gloo, ddp_spawn)
that trains on its shards and ends as accurate as one process with the same global batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from callbacks import ConfusionMatrix
from conftest import REPO

from datamodules import MNIST
from datamodules.base import TensorBatches
from lit_models import Classifier


class RecordShard(L.Callback):
    """Saves the labels each rank trained on in epoch 0, so the test can check the shards."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch[0].flatten(1).sum(1))  # a fingerprint of each image

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            torch.save(torch.cat(self.seen), f"{self.out}/rank{trainer.global_rank}.pt")


@pytest.mark.timeout(600)  # subprocesses / several processes: a longer limit than the default
def test_two_process_ddp_fit(mnist_dir, tmp_path):
    L.seed_everything(0)
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, batch_size=25, download=False)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path),
                        callbacks=[RecordShard(str(tmp_path)), ConfusionMatrix(stages=("train", "val"))])
    model = Classifier(optimizer="adam", lr=3e-3)
    trainer.fit(model, dm)
    ddp_acc = float(trainer.callback_metrics["val/acc"])
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert len(r0) == len(r1) == 250  # 500 training images, split evenly
    dm.setup()
    everything = dm.split_tensors("train")[0].flatten(1).sum(1)
    # The two shards together cover the training split (fingerprints match up to float error).
    both = torch.cat([r0, r1]).sort().values
    assert torch.allclose(both, everything.sort().values, atol=1e-2)
    assert trainer.callback_metrics["val/acc"] > 0.8
    # Confusion matrices are summed over both ranks before rank zero writes them: every example counted once.
    for stage, n in (("train", 500), ("val", 100)):
        with open(tmp_path / "figures" / f"confusion_{stage}.csv") as f:
            assert sum(int(r["count"]) for r in csv.DictReader(f)) == n

    # One process, the same global batch (2 ranks x 25) and epochs: the same accuracy within noise.
    L.seed_everything(0)
    single = L.Trainer(accelerator="cpu", devices=1, max_epochs=3, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False)
    single.fit(Classifier(optimizer="adam", lr=3e-3),
               MNIST(data_dir=str(mnist_dir), val_size=100, batch_size=50, download=False))
    assert single.global_step == 30  # 500 / 50 a step; each DDP rank also made 250 / 25 = 10 steps an epoch
    assert abs(float(single.callback_metrics["val/acc"]) - ddp_acc) <= 0.05


def _batches(n: int, rank: int, world: int, shuffle: bool) -> TensorBatches:
    images, labels = torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n)  # the label is the index
    return TensorBatches(images, labels, torch.arange(n), 8, torch.zeros(1), torch.ones(1), shuffle=shuffle,
                         seed=3, rank=rank, world_size=world)


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("n", [96, 103])
def test_training_shards_are_equal_sized_and_cover_the_split(n, world):
    shards = []
    for rank in range(world):
        batches = _batches(n, rank, world, shuffle=True)
        batches.sampler.set_epoch(5)
        seen = [y for _, y in batches]
        assert len(batches) == len(seen) and [len(y) for y in seen[:-1]] == [8] * (len(seen) - 1)
        shards.append(torch.cat(seen))
    # DDP needs the same number of steps on every rank: equal shards, padded by at most world - 1 repeats.
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // world)
    everything = torch.cat(shards)
    assert set(everything.tolist()) == set(range(n)) and len(everything) - n < world


@pytest.mark.parametrize("world", [2, 3])
def test_evaluation_shards_partition_the_split_exactly(world):
    shards = [torch.cat([y for _, y in _batches(103, rank, world, shuffle=False)]) for rank in range(world)]
    assert sorted(torch.cat(shards).tolist()) == list(range(103))  # every example once, none padded


@pytest.mark.timeout(600)  # two processes through the CLI: ~1-2 min each on an idle 2-core machine
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp"])
def test_two_process_cpu_ddp_through_the_cli_fits_tests_and_records_the_run(mnist_dir, tmp_path, strategy):
    # `ddp` starts rank 1 by re-running sys.argv[0], so the CLI runs as a script (`python -m cli`), as users run it.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    argv = ["fit", "--config", str(REPO / "configs" / "base.yaml"), "--config", str(REPO / "configs" / "ddp.yaml"),
            "--trainer.accelerator", "cpu", "--trainer.strategy", strategy, "--data.data_dir", str(mnist_dir),
            "--data.download", "false", "--data.val_size", "100", "--data.batch_size", "50",
            "--model.net.hidden", "[32]", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    proc = subprocess.run([sys.executable, "-m", "cli", *argv], env=env, capture_output=True, text=True,
                          timeout=540, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "default" / "version_0"
    results = json.loads((run / "results.json").read_text())
    # 500 training images, 2 ranks x 50 a step: 5 steps an epoch on each rank, 2 epochs.
    assert (results["status"], results["epochs"], results["global_step"]) == ("finished", 2, 10)
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = [r for r in rows if r.get("val/acc")]
    test = [r for r in rows if r.get("test/acc")]
    assert [int(r["epoch"]) for r in val] == [0, 1] and len(test) == 1  # every row kept, the test row added
    assert results["val/acc"] == pytest.approx(float(val[-1]["val/acc"]), abs=1e-6)
    assert results["test/acc"] == pytest.approx(float(test[0]["test/acc"]), abs=1e-6)
    assert results["test/acc"] > 0.5  # the tested weights are trained ones (untrained: ~0.1 on 10 classes)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10


class RecordEpochMetrics(L.Callback):
    """Saves each rank's final epoch metrics and the warnings it showed; logs one metric without reducing it."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_start(self, trainer, pl_module) -> None:
        self.warned = []
        warnings.showwarning = lambda message, *args, **kwargs: self.warned.append(str(message))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("extra/rank", torch.tensor(float(trainer.global_rank)), on_epoch=True)  # not reduced

    def on_fit_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        torch.save({"metrics": metrics, "warned": self.warned}, f"{self.out}/metrics{trainer.global_rank}.pt")


@pytest.mark.timeout(600)
def test_ddp_epoch_metrics_cover_the_whole_split_on_every_rank(mnist_dir, tmp_path):
    L.seed_everything(0)
    dm = MNIST(data_dir=str(mnist_dir), val_size=101, batch_size=25, eval_batch_size=20, download=False)  # odd: 51+50
    model = Classifier(optimizer="adam", lr=3e-3)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), num_sanity_val_steps=0,
                        callbacks=[RecordEpochMetrics(str(tmp_path))])
    trainer.fit(model, dm)
    r0, r1 = (torch.load(tmp_path / f"metrics{r}.pt") for r in (0, 1))
    # Every rank logged the same, reduced value of each litlab metric (the unreduced one differs: the check bites).
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "val/f1_macro"):
        assert r0["metrics"][key] == r1["metrics"][key], key
    assert r0["metrics"]["extra/rank"] != r1["metrics"]["extra/rank"]
    # ... and it is the whole validation split's: recomputed here from the trained weights ddp_spawn returns.
    dm.setup()
    x, y = dm.split_tensors("val")
    with torch.no_grad():
        logits = model.eval()(x)
    assert r0["metrics"]["val/acc"] == pytest.approx((logits.argmax(-1) == y).float().mean().item(), abs=1e-6)
    assert r0["metrics"]["val/loss"] == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-5)
    # Lightning's "use sync_dist=True" advice is silenced for litlab's reduced metrics only.
    advice = [w for w in r0["warned"] if "sync_dist=True" in w]
    assert any("'extra/rank'" in w for w in advice) and not any("'val/" in w or "'train/" in w for w in advice), advice
