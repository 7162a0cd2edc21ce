"""Sweep files: W&B's argument formatting, the agent's command line for every sweep file, the offline runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cli import cli_main
from conftest import REPO, make_mnist_dir
from experiments import report
from experiments import sweep as sweep_runner
from experiments.agent import none_to_null
from experiments.sweepfile import SweepError, agent_command, expand, litlab_args, load_sweep, point_name
from helpers import BASE

SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
# Sweeps whose runs start from another run's checkpoint (and CIFAR-10): their points are parsed, not run.
NEEDS_A_PRIOR_RUN = {"transfer_lr"}


@pytest.fixture(scope="module")
def data_5k(tmp_path_factory) -> Path:
    # 5,200 synthetic train images: enough for the sweeps' train_size 2000 / 5000 points (val 100).
    return make_mnist_dir(tmp_path_factory.mktemp("data5k"), n_train=5200, n_test=200)


def test_agent_command_matches_wandbs_formatting():
    sweep = {"program": "cli.py", "parameters": {}, "command": ["${env}", "${interpreter}", "${program}", "fit",
                                                               "${args}"]}
    point = {"model.init_args.net.init_args.hidden": [128, 64], "model.init_args.weighting": None,
             "model.init_args.net.init_args.batch_norm": True, "model.init_args.lr": 1e-05}
    assert agent_command(sweep, point) == [
        "/usr/bin/env", "python", "cli.py", "fit", "--model.init_args.net.init_args.hidden=[128, 64]",
        "--model.init_args.weighting=None", "--model.init_args.net.init_args.batch_norm=True",
        "--model.init_args.lr=1e-05"]
    assert litlab_args({**sweep, "command": ["litlab", "fit", "${args_no_equals}"]}, {"a": False}) == [
        "fit", "--a", "False"]


def test_grid_and_seeded_random_expansion(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("method: random\nparameters:\n  model.init_args.lr: {distribution: log_uniform_values, "
                    "min: 1.0e-4, max: 1.0}\n  data.init_args.batch_size: {values: [32, 64]}\n"
                    "command: [litlab, fit, '${args}']\n")
    sweep = load_sweep(path)
    draws = expand(sweep, count=5, seed=3)
    assert draws == expand(sweep, count=5, seed=3) != expand(sweep, count=5, seed=4)
    assert all(1e-4 <= d["model.init_args.lr"] <= 1.0 and d["data.init_args.batch_size"] in (32, 64) for d in draws)
    with pytest.raises(SweepError, match="--count"):
        expand(sweep)
    grid = load_sweep(REPO / "configs" / "sweeps" / "batch_norm.yaml")
    assert len(expand(grid)) == 4 and len(expand(grid, count=3)) == 3
    assert point_name(3, {"model.init_args.net.init_args.hidden": [1024, 512]}) == "p03_hidden-1024-512"
    path.write_text("parameters:\n  a: {values: [1]}\ncommand: [litlab, fit]\n")
    with pytest.raises(SweepError, match=r"\$\{args\}"):
        load_sweep(path)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_wandb_agent_command_parses_and_runs(path, data_5k, tmp_path):
    """The exact argv `wandb agent` builds, run from a repository-like folder, for every sweep file."""
    for name in ("configs", "cli.py"):  # the agent runs from the repository root
        (tmp_path / name).symlink_to(REPO / name)
    sweep = load_sweep(path)
    points = expand(sweep, count=None if sweep["method"] == "grid" else 2)
    data = ["--data.data_dir", str(data_5k), "--data.download", "false", "--data.val_size", "100"]
    cli = None
    for point in points:
        argv = agent_command(sweep, point)
        assert argv[:4] == ["/usr/bin/env", "python", "cli.py", "fit"] and (tmp_path / argv[2]).is_file()
        args = [*argv[3:], *data, "--trainer.fast_dev_run", "true"]
        if cli is None and path.stem in NEEDS_A_PRIOR_RUN:  # parse only, with the parser of a plain run
            cli = cli_main(["fit", *BASE, *data, "--trainer.fast_dev_run", "true"])
        if cli is None:  # the first point trains a step ...
            cli = cli_main(args)
            config = cli.config.fit
        else:  # ... every point parses to its values (bools, None, lists), without building it
            config = cli.parser.parse_args(none_to_null(args)).fit
        for key, value in point.items():
            if key == "config":  # a swept `--config=<file>`: the last config file read
                got = str(config["config"][-1])
            elif key.startswith("trainer.callbacks."):  # `--trainer.callbacks.x` sets the last listed callback's x
                got = config["trainer.callbacks"][-1].init_args[key.rsplit(".", 1)[1]]
            else:
                got = getattr(config[key], "class_path", config[key])  # a class by name → class_path + init_args
            got = list(got) if isinstance(got, tuple) else got
            assert got == value and type(got) is type(value), (key, got, value)  # None stays None, not "None"
    assert cli.model is not None
    if path.stem == "softmax_regression":  # the net is fixed in the command
        assert type(cli.model.net).__name__ == "SoftmaxRegression"
    if path.stem == "scratch_vs_autograd":  # the first point trains the scratch MLP, the last parses the autograd one
        assert type(cli.model).__name__ == "ScratchMLP" and config["model"].class_path == "lit_models.Classifier"


def test_sweep_runner_tables_and_resume(mnist_dir, tmp_path, capsys):
    path = tmp_path / "lr.yaml"
    path.write_text(
        "program: cli.py\nmethod: grid\nmetric: {name: test/acc, goal: maximize}\nparameters:\n"
        "  model.init_args.lr: {values: [0.1, 1000.0]}\n  model.init_args.net.init_args.hidden: {value: [16]}\n"
        "command:\n  - ${env}\n  - ${interpreter}\n  - ${program}\n  - fit\n  - --config\n  - configs/base.yaml\n"
        "  - ${args}\n")
    extra = ["--", "--data.data_dir", str(mnist_dir), "--data.download", "false", "--data.val_size", "100",
             "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    out = sweep_runner.main([str(path), "--seeds", "2", "--in-process", "--out", "sw", *extra])
    assert out == Path("sw")
    progress = capsys.readouterr().out
    assert "[1/4] p00_lr-0.1_hidden-16 seed0: finished test/acc=" in progress
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["point"], r["seed"]) for r in rows] == [
        ("p00_lr-0.1_hidden-16", "0"), ("p00_lr-0.1_hidden-16", "1"),
        ("p01_lr-1000.0_hidden-16", "0"), ("p01_lr-1000.0_hidden-16", "1")]
    good = [float(r["test/acc"]) for r in rows[:2]]
    assert all(a >= 0.9 for a in good) and rows[0]["model.init_args.lr"] == "0.1"
    md = (out / "results.md").read_text()
    best = next(line for line in md.splitlines() if "★" in line and line.startswith("|"))
    assert "p00_lr-0.1_hidden-16" in best and "±" in best  # mean ± std over the two seeds, marked best
    # Resume: finished runs are skipped; a run whose results.json is gone runs again.
    (out / "p00_lr-0.1_hidden-16" / "seed1" / "results.json").unlink()
    sweep_runner.main([str(path), "--seeds", "2", "--in-process", "--out", "sw", *extra])
    progress = capsys.readouterr().out
    assert progress.count("already, skipped") == 3 and "[2/4] p00_lr-0.1_hidden-16 seed1: finished" in progress
    assert json.loads((out / "p00_lr-0.1_hidden-16" / "point.json").read_text())["model.init_args.lr"] == 0.1
    page = report.main([str(out)]).read_text()  # the report of a real sweep: its table and curves
    assert "p00_lr-0.1_hidden-16 ★" in page and page.count("<img") == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_runs_can_use_ddp(mnist_dir, tmp_path, capsys):
    """Each run is a `python -m cli` child, which Lightning's ddp launcher can start again for rank 1 (it re-runs
    the child's command line: `python -c "import cli; ..."` could not be)."""
    path = tmp_path / "ddp.yaml"
    path.write_text(
        "program: cli.py\nmethod: grid\nmetric: {name: test/acc, goal: maximize}\nparameters:\n"
        "  model.init_args.net.init_args.hidden: {value: [16]}\n"
        "command:\n  - ${env}\n  - ${interpreter}\n  - ${program}\n  - fit\n  - --config\n  - configs/base.yaml\n"
        "  - ${args}\n")
    extra = ["--", "--data.data_dir", str(mnist_dir), "--data.download", "false", "--data.val_size", "100",
             "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.strategy", "ddp",
             "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    out = sweep_runner.main([str(path), "--out", str(tmp_path / "sw"), *extra])
    run = out / "p00_hidden-16" / "seed0"
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["test/acc"] > 0.5, (run.parent / "seed0.log").read_text()
    log = next(out.rglob("*.log")).read_text()
    assert "distributed_backend=gloo" in log and "All distributed processes registered. Starting with 2 processes" \
        in log, log


def test_litlab_dispatches_sweep_and_report(monkeypatch, capsys):
    import cli

    monkeypatch.setattr("sys.argv", ["litlab", "sweep", "--help"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0 and "--seeds" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", ["litlab", "sweep", "missing.yaml"])
    with pytest.raises(SystemExit, match="missing.yaml not found"):
        cli.main()


def test_under_wandb_agent_runs_log_to_the_sweep(mnist_dir, monkeypatch):
    """`wandb agent` sets WANDB_SWEEP_ID: the run gets a WandbLogger next to the CSV one (which stays the run dir)."""
    base = [*BASE, "--data.data_dir", str(mnist_dir), "--data.download",
            "false", "--model.init_args.weighting=None"]
    assert [type(lg).__name__ for lg in cli_main(base, run=False).trainer.loggers] == ["CSVLogger"]
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cli = cli_main(base, run=False)
    assert [type(lg).__name__ for lg in cli.trainer.loggers] == ["CSVLogger", "WandbLogger"]
    # W&B's folder beside the run directories, made absolute (runtime/wandb_run.py)
    assert cli.trainer.loggers[1].save_dir == str(Path("runs").resolve()) and cli.model.weighting is None


def test_a_sweep_over_seed_everything_groups_seeds_under_one_point(capsys, tmp_path):
    path = tmp_path / "seeds.yaml"
    path.write_text("parameters:\n  model.init_args.weighting: {values: [null, lit_models.losses.OHEM]}\n"
                    "  seed_everything: {values: [0, 1, 2]}\ncommand: [litlab, fit, '${args}']\n")
    sweep_runner.main([str(path), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and lines[0].startswith("[1/6] p00_weighting-None seed0 fit --model")
    assert lines[2].startswith("[3/6] p00_weighting-None seed2 ") and "--seed_everything=2" in lines[2]
    assert lines[5].startswith("[6/6] p01_weighting-lit_models.losses.OHEM seed2 ")
    with pytest.raises(SystemExit, match="sweeps seed_everything itself"):
        sweep_runner.main([str(path), "--dry-run", "--seeds", "3"])


def test_the_weighting_comparison_is_every_shipped_strategy_on_the_experiment_given_after_the_dashes(capsys):
    sweep_runner.main([str(REPO / "configs" / "sweeps" / "weighting.yaml"), "--dry-run", "--seeds", "3", "--",
                       "--config", "configs/noisy_mnist.yaml"])
    lines = capsys.readouterr().out.splitlines()
    shipped = sorted(p.name for p in (REPO / "configs" / "weighting").glob("*.yaml"))
    swept = sorted({line.split()[1].split("-weighting-")[1] for line in lines})
    assert swept == shipped and len(lines) == 3 * len(shipped)  # every config × seeds 0, 1, 2
    assert lines[0].startswith("[1/27] p00_config-configs-weighting-plain.yaml seed0 fit --config")
    # The experiment comes after the swept strategy and the run's seeds, before the run directory.
    assert "--config=" in lines[5] and " --data.init_args.seed=2 --config configs/noisy_mnist.yaml " in lines[5]


@pytest.mark.slow
def test_softmax_regression_sweep_on_real_mnist(real_mnist, capsys):
    """The shipped sweep file on the real MNIST (1 epoch): lr 0.01 beats 0.001, as in the report."""
    out = sweep_runner.main([str(REPO / "configs" / "sweeps" / "softmax_regression.yaml"), "--in-process",
                             "--out", "sm", "--", "--data.data_dir", str(real_mnist), "--data.download", "false",
                             "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"])
    rows = {r["model.init_args.lr"]: float(r["test/acc"]) for r in csv.DictReader((out / "results.csv").open())}
    assert 0.75 < rows["0.001"] < rows["0.01"] < 0.95, rows  # measured 0.822 and 0.897
    assert "**p01_lr-0.01_momentum-0.0** ★" in next(
        line for line in (out / "results.md").read_text().splitlines() if "★" in line and line.startswith("|"))
