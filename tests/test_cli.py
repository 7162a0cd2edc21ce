"""The CLI in-process: fit → test, saved config, results.json, resume, W&B offline, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli import cli_main
from conftest import REPO
from helpers import BASE, tiny


def test_fit_tests_best_checkpoint_and_writes_the_run_directory(mnist_dir):
    cli = cli_main(["fit", *tiny(mnist_dir, "--model.net.hidden", "[32]")])
    run = Path(cli.trainer.log_dir)
    assert run == Path("runs/default/version_0")
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_args"]["net"]["init_args"]["hidden"] == [32]
    assert cli.model.hparams.num_classes == 10 and tuple(cli.model.hparams.input_shape) == (1, 28, 28)  # linked
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["epochs"] == 2
    # Synthetic digits are separable: every measured run scores 1.0, so 0.95 leaves room for 5 slips of 100.
    assert results["test/acc"] >= 0.95 and results["val/acc_best"] >= results["val/acc"] - 1e-9
    assert "train/loss" in (run / "metrics.csv").read_text().splitlines()[0]


def test_test_subcommand_from_a_checkpoint(mnist_dir):
    fit = cli_main(["fit", *tiny(mnist_dir, "--test_after_fit", "false")])
    best = fit.trainer.checkpoint_callback.best_model_path
    test = cli_main(["test", *tiny(mnist_dir), "--ckpt_path", best])
    assert test.trainer.callback_metrics["test/acc"] >= 0.95  # measured 1.0 (synthetic digits)
    results = json.loads((Path(test.trainer.log_dir) / "results.json").read_text())
    assert results["status"] == "tested" and results["test/acc"] == pytest.approx(
        float(test.trainer.callback_metrics["test/acc"]), abs=1e-6)


def test_resume_from_last_continues_the_run(mnist_dir):
    first = cli_main(["fit", *tiny(mnist_dir, "--test_after_fit", "false")])
    steps = first.trainer.global_step
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    for ckpt in (str(last), "last"):  # an explicit path, or the newest last.ckpt of this experiment
        resumed = cli_main(["fit", *tiny(mnist_dir, "--test_after_fit", "false"), "--trainer.max_epochs", "3",
                            "--ckpt_path", ckpt])
        assert resumed.trainer.current_epoch == 3
        assert resumed.trainer.global_step == steps * 3 // 2
    with pytest.raises(SystemExit, match="no last.ckpt under"):
        cli_main(["fit", *tiny(mnist_dir), "--trainer.logger.init_args.name", "other", "--ckpt_path", "last"])


def test_quickstart_config_runs_on_the_embedded_subset():
    cli = cli_main(["fit", *BASE, "--config", str(REPO / "configs" / "quickstart.yaml"),
                    "--trainer.fast_dev_run", "true"])
    assert cli.datamodule.num_examples("train") == 5000


def test_mlp_mnist_config_builds_the_report_net(mnist_dir):
    cli = cli_main(["fit", *tiny(mnist_dir), "--config", str(REPO / "configs" / "mlp_mnist.yaml"),
                    "--data.data_dir", str(mnist_dir), "--trainer.fast_dev_run", "true"], run=True)
    widths = [m.out_features for m in cli.model.net if hasattr(m, "out_features")]
    assert widths == [1024, 512, 256, 10] and cli.model.hparams.lr_decay == 0.97


def test_wandb_logger_offline_writes_under_save_dir(mnist_dir, tmp_path):
    cli = cli_main(["fit", *tiny(mnist_dir), "--trainer.max_epochs", "1",
                    "--trainer.logger+=lightning.pytorch.loggers.WandbLogger",
                    "--trainer.logger.offline", "true", "--trainer.logger.save_dir", "runs"])
    assert [type(lg).__name__ for lg in cli.trainer.loggers] == ["CSVLogger", "WandbLogger"]
    assert list(Path("runs/wandb").glob("offline-run-*"))
    assert not Path("wandb").exists()


@pytest.mark.parametrize(("arg", "message"), [
    (["--model.net.activation", "gelu"], "activation"),
    (["--model.optimizer", "rmsprop"], "optimizer"),
    (["--model.lr", "fast"], "lr"),
    (["--data.no_such_option", "1"], "no_such_option"),
])
def test_bad_config_values_exit_with_a_message(mnist_dir, capsys, arg, message):
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", *tiny(mnist_dir), *arg])
    assert exc.value.code != 0
    assert message in capsys.readouterr().err


def test_help_explains_model_and_data_arguments(capsys):
    for args in (["fit", "--help"], ["fit", *BASE, "--model.help", "lit_models.Classifier"],
                 ["fit", *BASE, "--data.help", "datamodules.MNIST"]):
        with pytest.raises(SystemExit):
            cli_main(args)
    out = capsys.readouterr().out
    for text in ("--model.help", "--test_after_fit", "--model.lr_decay", "Multiply the learning rate",
                 "--data.train_size", "Train on this many"):
        assert text in out


def test_top_level_help_lists_the_commands_litlab_adds(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    top = capsys.readouterr().out
    assert all(f"`litlab {c} " in top.replace("\n", " ") for c in ("sweep", "report", "reproduce", "export"))
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    assert "litlab adds four more" not in capsys.readouterr().out  # the subcommands keep their own help
