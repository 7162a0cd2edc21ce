"""Clusters: torchrun with 2 CPU processes (gloo) matches 1 process at the same global batch; a SLURM requeue
(simulated: the job's SIGUSR1 and a stand-in `scontrol`) resumes into the same run directory."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from cli import cli_main
from conftest import REPO

QUICKSTART = ["--config", str(REPO / "configs" / "base.yaml"), "--config", str(REPO / "configs" / "quickstart.yaml"),
              "--trainer.enable_progress_bar", "false"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # The README's command: each rank takes batches of 64 from its half of every epoch (global batch 128).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "cli", "fit", *QUICKSTART, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--data.batch_size", "64", "--trainer.max_epochs", "3",
           "--trainer.logger.init_args.name", "torchrun"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gloo" in done.stderr + done.stdout  # Lightning's DDP on CPU: "Initializing distributed: ... gloo"
    runs = list((tmp_path / "runs" / "torchrun").iterdir())
    assert [r.name for r in runs] == ["version_0"]  # both ranks wrote into one run directory
    ddp = json.loads((runs[0] / "results.json").read_text())
    single = cli_main(["fit", *QUICKSTART, "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                       "--trainer.max_epochs", "3"])
    one = json.loads((Path(single.trainer.log_dir) / "results.json").read_text())
    assert ddp["status"] == one["status"] == "finished" and ddp["global_step"] == one["global_step"] == 120
    assert abs(ddp["test/acc"] - one["test/acc"]) <= 0.01


class SlurmSignal(L.Callback):
    """What SLURM does before a job's time runs out (`--signal=SIGUSR1@90`): send SIGUSR1, here mid-epoch 1."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 5:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.timeout(600)
def test_a_requeued_slurm_job_resumes_into_the_same_run_directory(mnist_dir, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "litlab", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "node1"}.items():
        monkeypatch.setenv(key, value)
    args = ["fit", "--config", str(REPO / "configs" / "base.yaml"), "--data.data_dir", str(mnist_dir),
            "--data.download", "false", "--data.val_size", "100", "--data.batch_size", "50",
            "--trainer.max_epochs", "4",
            "--trainer.default_root_dir", "jobs/4242", "--trainer.enable_progress_bar", "false"]
    first = cli_main([*args, "--trainer.callbacks+=test_cluster.SlurmSignal"])
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert [p.name for p in Path("jobs/4242").glob("hpc_ckpt_*.ckpt")] == ["hpc_ckpt_1.ckpt"]
    run = Path(first.trainer.log_dir)
    assert json.loads((run / "results.json").read_text())["status"] == "requeued"  # not tested, not "finished"
    # The requeued job: the same command, under the same job id.
    second = cli_main(args)
    assert Path(second.trainer.log_dir) == run and [p.name for p in run.parent.iterdir()] == ["version_0"]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["epochs"] == 4 and results["global_step"] == 40
    assert "test/acc" in results
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    train_epochs = [int(r["epoch"]) for r in rows if r["train/loss"]]
    assert train_epochs == [0, 1, 2, 3]  # one metrics.csv, each epoch once


def test_data_is_prepared_once_per_job_unless_asked_per_node(mnist_dir):
    from datamodules import CIFAR10, MNIST

    # Lightning calls prepare_data on global rank 0 only when prepare_data_per_node is False: one download
    # into a shared data_dir, never several nodes writing the same files at once.
    assert MNIST(data_dir=str(mnist_dir)).prepare_data_per_node is False
    assert CIFAR10(prepare_per_node=True).prepare_data_per_node is True
