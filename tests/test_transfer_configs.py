"""The offline transfer pipeline from its configs on a tiny synthetic CIFAR-10: pretrain on 8 classes →
scratch / linear probe / fine-tune on ship vs truck → best-vs-worst gallery; the LR sweep's keys parse."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from callbacks.training.finetuning import EncoderFinetuning
from cli import cli_main
from conftest import REPO
from helpers import BASE
from fake_cifar import make_cifar_dir

SMALL = ["--trainer.max_epochs", "1", "--trainer.logger.init_args.save_dir", "runs", "--data.download", "false",
         "--data.augment", "false", "--trainer.enable_progress_bar", "false"]


def config(name: str) -> list[str]:
    return ["--config", str(REPO / "configs" / name)]


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    return make_cifar_dir(tmp_path / "cifar", per_batch=40, n_test=60)


def test_transfer_pipeline_runs_offline_from_configs(cifar_dir, capsys):
    data = ["--data.data_dir", str(cifar_dir), *SMALL]
    pre = cli_main(["fit", *BASE, *config("transfer/pretrain_cifar8.yaml"), *data, "--data.val_size", "20",
                    "--model.net.hidden", "32"])
    assert pre.datamodule.num_classes == 8 and pre.model.net[-1].out_features == 8
    ckpt = pre.trainer.checkpoint_callback.best_model_path
    runs = {}
    for mode in ("scratch", "linear_probe", "finetune"):
        cli = cli_main(["fit", *BASE, *config(f"transfer/{mode}.yaml"), *data, "--data.val_size", "10",
                        "--model.net.encoder.hidden", "32", "--model.net.checkpoint", ckpt])
        assert list(cli.datamodule.class_names) == ["ship", "truck"]
        assert cli.model.net.head.in_features == 32  # the 8-class output layer was dropped
        assert [c.mode for c in cli.trainer.callbacks if isinstance(c, EncoderFinetuning)] == [mode]
        runs[mode] = Path(cli.trainer.log_dir)
        assert json.loads((runs[mode] / "results.json").read_text())["status"] == "finished"
    probe = torch.load(runs["linear_probe"] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    pretrained = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(probe["net.encoder.0.weight"], pretrained["net.0.weight"])  # frozen backbone
    assert torch.equal(probe["net.encoder.1.running_mean"], pretrained["net.1.running_mean"])

    spec = importlib.util.spec_from_file_location("transfer_gallery", REPO / "scripts" / "transfer_gallery.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([*map(str, runs.values()), "--k", "2"]) == 0
    assert "images →" in capsys.readouterr().out
    assert list(Path("runs").glob("transfer_*/version_0/figures/transfer_gallery.png"))


def test_transfer_lr_sweep_grid_is_three_modes_by_five_rates_and_parses(cifar_dir):
    sweep = yaml.safe_load((REPO / "configs" / "sweeps" / "transfer_lr.yaml").read_text())
    params = sweep["parameters"]
    assert params["trainer.callbacks.mode"]["values"] == ["scratch", "linear_probe", "finetune"]
    assert params["model.init_args.lr"]["values"] == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    cmd = sweep["command"]
    files = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--config"]
    args = [a for f in files for a in ("--config", str(REPO / f))]
    # One grid point as W&B passes it (--key=value), on the tiny data; built, not trained.
    cli = cli_main([*args, "--data.data_dir", str(cifar_dir), "--data.val_size", "10", "--data.download", "false",
                    "--model.net.encoder.hidden", "32", "--trainer.callbacks.mode=linear_probe",
                    "--model.init_args.lr=0.001", "--trainer.logger", "false"], run=False)
    assert cli.model.hparams.lr == 0.001
    assert [c.mode for c in cli.trainer.callbacks if isinstance(c, EncoderFinetuning)] == ["linear_probe"]
