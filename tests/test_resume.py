"""Exact resume after SIGKILL mid-epoch, and run-to-run reproducibility, with real CLI subprocesses."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from helpers import BASE
from runtime.checkpoint_io import AtomicCheckpointIO
from conftest import REPO
from datamodules.base import TensorBatches

# 500 training examples in batches of 32: 16 steps an epoch, 4 epochs. Dropout (RNG), a per-epoch LR decay
# (scheduler), early stopping (callback state) and `last` every 5 steps all have to resume exactly.
RUN = [*BASE, "--data.val_size", "100", "--data.download", "false",
       "--data.batch_size", "32", "--trainer.max_epochs", "4", "--trainer.deterministic", "true",
       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
       "--model.net.hidden", "[32]", "--model.net.dropout", "0.2", "--model.lr_decay", "0.9",
       "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/loss",
       "--trainer.callbacks.patience", "10", "--checkpoint.save_last_every_n_steps", "5"]


def litlab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-c", "import cli; cli.main()", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"litlab {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def results(run: Path) -> dict:
    data = json.loads((run / "results.json").read_text())
    return {k: v for k, v in data.items() if k not in ("fit_seconds", "best_checkpoint")}


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.timeout(600)  # subprocesses / several processes: a longer limit than the default
@pytest.mark.slow  # six CLI subprocesses: ~50 s on an idle 2-core machine
def test_sigkill_mid_epoch_then_resume_is_bit_identical_and_reruns_reproduce(mnist_dir, tmp_path):
    data = ["--data.data_dir", str(mnist_dir)]
    litlab("fit", *RUN, *data, "--trainer.logger.init_args.save_dir", "straight")
    straight = tmp_path / "straight" / "default" / "version_0"

    killed = litlab("fit", *RUN, *data, "--trainer.logger.init_args.save_dir", "killed",
                    "--trainer.callbacks+=helpers.faults.KillAtStep", "--trainer.callbacks.step", "27", check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]  # died mid-epoch 2 (steps 16..31); last.ckpt is step 25
    run = tmp_path / "killed" / "default" / "version_0"
    assert json.loads((run / "results.json").read_text())["status"] == "running"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 25
    litlab("fit", *RUN, *data, "--trainer.logger.init_args.save_dir", "killed", "--ckpt_path", "last")

    assert not (tmp_path / "killed" / "default" / "version_1").exists()  # resumed into the same run directory
    assert "ckpt_path: null" in (run / "config.yaml").read_text()  # the config still describes the whole run
    assert results(run) == results(straight) and results(run)["status"] == "finished"
    assert rows(run) == rows(straight)  # every epoch's row, once, with bit-identical values
    epoch_rows = [r["epoch"] for r in rows(run) if not r["train/loss_step"]]
    assert epoch_rows == ["0", "0", "1", "1", "2", "2", "3", "3", "4"]  # train, val; test
    assert [r["step"] for r in rows(run) if r["train/loss_step"]] == ["49"]  # log_every_n_steps=50: once, kept
    for name, tensor in weights(straight).items():
        assert torch.equal(tensor, weights(run)[name]), name

    # The default: `last` once an epoch, after its first step (step 17 in epoch 1); killed in epoch 1.
    litlab("fit", *RUN, *data, "--trainer.logger.init_args.save_dir", "boundary",
           "--checkpoint.save_last_every_n_steps", "0", "--trainer.callbacks+=helpers.faults.KillAtStep",
           "--trainer.callbacks.step", "20", check=False)
    run = tmp_path / "boundary" / "default" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 17
    litlab("fit", *RUN, *data, "--trainer.logger.init_args.save_dir", "boundary", "--ckpt_path", "last")
    assert results(run) == results(straight) and rows(run) == rows(straight)

    # The saved config re-runs the run (into the next version of the same experiment), number for number.
    litlab("fit", "--config", str(straight / "config.yaml"))
    again = tmp_path / "straight" / "default" / "version_1"
    assert results(again) == results(straight) and rows(again) == rows(straight)


# -- the pieces, in-process ------------------------------------------------------------------------------------
def test_tensor_batches_resume_mid_epoch_from_their_state():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1)
    labels = torch.arange(20)

    def make(progress):
        return TensorBatches(images, labels, torch.arange(20), 3, torch.zeros(1), torch.ones(1) / 255,
                             shuffle=True, seed=5, progress=progress)

    done = {"n": 0}
    first = make(lambda: done["n"])
    first.sampler.set_epoch(2)
    assert first.state_dict() == {"epoch": 2, "batches_done": 0}  # the epoch has not started
    it = iter(first)
    seen = [next(it)[1] for _ in range(3)]  # the loop prefetches: 3 yielded, 2 trained on
    done["n"] = 2
    state = first.state_dict()
    assert state == {"epoch": 2, "batches_done": 2}
    rest = [y for _, y in it]
    again = make(lambda: 0)
    again.load_state_dict(state)
    again.sampler.set_epoch(2)
    assert torch.equal(torch.cat([y for _, y in again]), torch.cat(seen[2:] + rest))  # from the third batch on
    assert len(list(again)) == len(again)  # the next epoch is whole again
    stale = make(lambda: 0)
    stale.load_state_dict(state)
    stale.sampler.set_epoch(3)  # a state from another epoch is ignored
    assert len(list(stale)) == len(stale)


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_write_dies(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1 and os.listdir(path.parent) == ["last.ckpt"]

    def dies_halfway(self, checkpoint, target, storage_options=None):  # Lightning's in-place write, cut short
        Path(target).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1 and os.listdir(path.parent) == ["last.ckpt"]


def test_last_is_refreshed_every_epoch_even_without_a_new_best(mnist_dir):
    from cli import cli_main

    # lr 0 (well, tiny): val/acc never improves after epoch 0, so top-k never saves again.
    cli = cli_main(["fit", *RUN[:2], "--data.data_dir", str(mnist_dir), "--data.val_size", "100",
                    "--data.download", "false", "--trainer.max_epochs", "3", "--model.lr", "1e-30",
                    "--trainer.enable_progress_bar", "false", "--test_after_fit", "false"])
    ckpts = Path(cli.trainer.log_dir) / "checkpoints"
    assert torch.load(ckpts / "best.ckpt", weights_only=True)["global_step"] == 4
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 12


def test_extending_a_finished_run_matches_running_longer_from_the_start(mnist_dir):
    from cli import cli_main

    fit = [*RUN[:2], "--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--data.download", "false",
           "--data.batch_size", "32", "--trainer.enable_progress_bar", "false", "--model.net.dropout", "0.2",
           "--model.lr_decay", "0.9", "--test_after_fit", "false"]
    cli_main(["fit", *fit, "--trainer.max_epochs", "3", "--trainer.logger.init_args.save_dir", "straight"])
    cli_main(["fit", *fit, "--trainer.max_epochs", "2", "--trainer.logger.init_args.save_dir", "extended"])
    cli_main(["fit", *fit, "--trainer.max_epochs", "3", "--trainer.logger.init_args.save_dir", "extended",
              "--ckpt_path", "last"])
    assert rows(Path("extended/default/version_0")) == rows(Path("straight/default/version_0"))
