"""What a newcomer sees: errors that lead (one `litlab:` paragraph with the nearest valid name), help that lists
the shipped classes, and a console that informs (a line per epoch when piped, a closing summary)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from runtime.console import fmt
from cli import cli_main
from conftest import REPO, make_mnist_dir

BASE = ["--config", str(REPO / "configs" / "base.yaml")]


def usage_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith("litlab: ") and len(lines) <= 10, err
    assert "usage:" not in err and "Traceback" not in err  # the full usage is for --help
    return " ".join(err.split())


@pytest.mark.parametrize("given, suggestion", [
    (["--model.lrr", "0.1"], "Did you mean `--model.lr`?"),
    (["--model.net.hiden", "[8]"], "Did you mean `--model.net.hidden`?"),
    (["--data.batchsize", "8"], "Did you mean `--data.batch_size`?"),
    (["--model.optimizer", "Adam"], "not one of sgd, adam, adamw. Did you mean `--model.optimizer adam`?"),
    (["--trainer.max_epcohs", "3"], "Did you mean `--trainer.max_epochs`?"),
    (["--model", "lit_models.Clasifier"], "Did you mean `lit_models.Classifier`?"),
])
def test_a_typo_ends_in_one_paragraph_with_the_nearest_name(given, suggestion, capsys):
    assert suggestion in usage_error(["fit", *BASE, *given], capsys)


def test_an_unknown_key_lists_what_the_class_accepts(capsys):
    message = usage_error(["fit", *BASE, "--model.lrr", "0.1"], capsys)
    assert "Classifier has no argument `lrr`" in message and "It accepts: net, " in message and "lr_decay" in message


def test_an_unknown_command_names_litlabs_commands(capsys):
    message = usage_error(["fitt"], capsys)
    assert "unknown command `fitt`" in message and "sweep, report, reproduce" in message
    assert "Did you mean `litlab fit`?" in message


def test_an_experiment_config_without_base_says_so(tmp_path, capsys):
    (tmp_path / "configs").symlink_to(REPO / "configs")  # as typed from the repository root
    message = usage_error(["fit", "--config", "configs/mlp_mnist.yaml"], capsys)
    assert "configs/mlp_mnist.yaml is an experiment config" in message
    assert "litlab fit --config configs/base.yaml --config configs/mlp_mnist.yaml" in message


@pytest.mark.parametrize("flag, listed, left_out", [
    ("--model.help", ["lit_models.Classifier", "lit_models.ScratchMLP", "lit_models.TripletEncoder"], "lit_models.MLP"),
    ("--data.help", ["datamodules.MNIST ", "datamodules.MNISTSubset", "datamodules.CIFAR10"], "InMemory"),
    ("--model.net.help", ["lit_models.MLP", "lit_models.LeNet5", "lit_models.BNCNN"], "lit_models.Classifier "),
])
def test_help_without_a_class_lists_the_shipped_ones(flag, listed, left_out, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["fit", flag])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and all(name in out for name in listed) and left_out not in out, out


def test_fmt_rounds_to_four_significant_digits():
    assert [fmt(0.9309999942779541), fmt(0.21371175348758698), fmt(2.0), fmt(1234.56)] == ["0.931", "0.2137", "2",
                                                                                        "1235"]


def test_piped_fit_prints_a_line_per_epoch_and_a_summary(tmp_path, capsys):
    data = make_mnist_dir(tmp_path / "data")
    cli_main(["fit", *BASE, "--data.data_dir", str(data), "--data.val_size", "100", "--data.download", "false",
              "--trainer.max_epochs", "2", "--trainer.callbacks+=callbacks.LearningCurves"])
    out = capsys.readouterr().out  # captured: not a terminal, as when piped to a file
    run = Path("runs/default/version_0")
    assert "it/s" not in out and "┃" not in out  # no progress bar, no model-summary or test table
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    # Each line carries its own epoch's training loss (the module logs it after callbacks' on_train_epoch_end).
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train/loss")]
    for line, row in zip(epochs, rows):
        assert f"train/loss {fmt(float(row['train/loss']))} " in line
    results = json.loads((run / "results.json").read_text())
    tail = out[out.index("Run directory: runs/default/version_0"):]
    assert f"test of {run}/checkpoints/best.ckpt: test/acc {fmt(results['test/acc'])} " in tail
    assert "test/recall/0" in results and "recall" not in out  # per class: in the file, not on the console
    assert f"figures in {run}/figures/: learning_curves.png" in tail


def test_test_with_ckpt_path_best_uses_the_newest_runs_best(tmp_path, capsys):
    data = make_mnist_dir(tmp_path / "data")
    common = [*BASE, "--data.data_dir", str(data), "--data.val_size", "100", "--data.download", "false"]
    for _ in range(2):
        cli_main(["fit", *common, "--trainer.max_epochs", "1", "--test_after_fit", "false"])
    capsys.readouterr()
    cli_main(["test", *common, "--ckpt_path", "best"])
    out = capsys.readouterr().out
    assert re.search(r"test of runs/default/version_1/checkpoints/best\.ckpt: test/acc [\d.]+  ", out), out


def test_top_level_help_describes_each_subcommand_in_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "test One evaluation epoch over the test split (--ckpt_path best: " in out and "It's" not in out
