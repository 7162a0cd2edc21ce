"""W&B conventions, read back from the offline W&B run files: the whole resolved config, the run directory's
name, the group, config-file tags, per-step `train/loss_step` and `lr`; a sweep point's seeds in one group."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cli import cli_main
from conftest import REPO
from experiments import sweep as sweep_runner
from runtime.wandb_run import config_tags, run_id
from helpers.wandb_files import finished_records, summary

QUICKSTART = ["--config", str(REPO / "configs" / "base.yaml"), "--config", str(REPO / "configs" / "quickstart.yaml"),
              "--trainer.enable_progress_bar", "false", "--test_after_fit", "false"]
WANDB = ["--trainer.logger+=WandbLogger", "--trainer.logger.offline", "true"]


def run_file(root: Path, run_id_prefix: str) -> Path:
    [found] = root.glob(f"wandb/offline-run-*-{run_id_prefix}*/run-*.wandb")
    return found


def test_an_offline_quickstart_run_has_config_name_group_and_per_step_series():
    cli_main(["fit", *QUICKSTART, *WANDB, "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "10",
              "--model.lr_decay", "0.5"])
    run = summary(run_file(Path("runs"), "quickstart-version_0-"))  # under runs/wandb, beside the run dirs
    assert run["name"] == "quickstart/version_0" and run["group"] == "quickstart"
    assert run["id"] == run_id(Path("runs/quickstart/version_0")) and run["tags"] == ["base", "quickstart"]
    config = run["config"]
    # The whole resolved config, not only the model's hyperparameters: trainer, seed, callbacks, data, model.
    assert config["trainer"]["max_epochs"] == 2 and config["trainer"]["log_every_n_steps"] == 10
    assert config["seed_everything"] == 0 and config["checkpoint"]["monitor"] == "val/acc"
    assert config["step_metrics"] == {"enabled": True, "loss": True}
    assert config["data"]["class_path"] == "datamodules.MNISTSubset"
    assert config["model"]["init_args"]["net"]["init_args"]["hidden"] == [128, 64]
    assert config["run_dir"] == "runs/quickstart/version_0"
    # 40 batches an epoch: the loss and the learning rate at batches 9, 19, ..., 79; lr halves after epoch 0.
    steps = [(h["trainer/global_step"], h["lr"]) for h in run["history"] if "train/loss_step" in h]
    assert steps == [(9, 0.1), (19, 0.1), (29, 0.1), (39, 0.1), (49, 0.05), (59, 0.05), (69, 0.05), (79, 0.05)]
    losses = [h["train/loss_step"] for h in run["history"] if "train/loss_step" in h]
    assert len(set(losses)) == 8 and sum(losses[4:]) < sum(losses[:4])  # each step's own loss, falling
    # The CSV logger has the same rows: every logger gets the per-step series.
    rows = [r for r in csv.DictReader(open("runs/quickstart/version_0/metrics.csv")) if r["train/loss_step"]]
    assert [int(r["step"]) for r in rows] == [s for s, _ in steps]
    assert [float(r["train/loss_step"]) for r in rows] == pytest.approx(losses)


def test_log_model_keeps_best_and_last_checkpoints_as_artifacts_of_an_offline_run():
    cli_main(["fit", *QUICKSTART, *WANDB, "--trainer.logger.log_model", "true", "--trainer.max_epochs", "1"])
    artifacts = [r.artifact for r in finished_records(run_file(Path("runs"), "quickstart-version_0-"))
                 if r.WhichOneof("record_type") == "artifact"]
    assert sorted((a.type, '"original_filename":"best.ckpt"' in a.metadata, "best" in a.aliases)
                  for a in artifacts) == [("model", False, False), ("model", True, True)]


def test_run_ids_follow_the_directory_and_tags_the_config_files(tmp_path):
    assert run_id(Path("runs/q/version_0")) == run_id(Path("runs/q/version_0"))  # a resumed run continues it
    assert run_id(Path("runs/q/version_0")) != run_id(Path("other/q/version_0"))  # unique per directory
    assert config_tags(["configs/base.yaml", "/x/configs/reproduce/000/mlp.yaml", "mine.yaml", "configs/base.yaml"]) \
        == ["base", "reproduce/000/mlp", "mine"]


@pytest.mark.timeout(600)
def test_a_sweep_with_an_added_wandb_logger_keeps_its_run_directories_and_groups_seeds(mnist_dir, tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("method: grid\nparameters:\n  model.init_args.lr: {values: [0.1]}\n"
                    "command: [litlab, fit, --config, configs/base.yaml, '${args}']\n")
    extra = ["--", "--data.data_dir", str(mnist_dir), "--data.download", "false", "--data.val_size", "100",
             "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", *WANDB]
    out = sweep_runner.main([str(path), "--seeds", "2", "--in-process", "--out", "sw", "--wandb", "offline", *extra])
    for seed in (0, 1):  # the runner's directory overrides went to the CSV logger, not to the added W&B one
        assert (out / "p00_lr-0.1" / f"seed{seed}" / "results.json").is_file()
        run = summary(run_file(out, run_id(out / "p00_lr-0.1" / f"seed{seed}")))
        assert run["name"] == f"p00_lr-0.1/seed{seed}" and run["group"] == "sw/p00_lr-0.1"
