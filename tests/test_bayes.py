"""`method: bayes` offline: Optuna TPE trials told each point's mean result (resumable), or a clear refusal."""

from __future__ import annotations

import builtins
import json
import statistics
from pathlib import Path

import pytest

from experiments import sweep as sweep_runner
from experiments.bayes import distributions, point_of
from experiments.sweepfile import SweepError, expand, load_sweep

BAYES = ("program: cli.py\nmethod: bayes\nmetric: {name: val/acc_best, goal: maximize}\nparameters:\n"
         "  model.init_args.lr: {distribution: log_uniform_values, min: 0.001, max: 0.5}\n"
         "  model.init_args.net.init_args.hidden: {values: [[16], [32, 16]]}\n"
         "  model.init_args.optimizer: {value: adam}\n"
         "command: [litlab, fit, --config, configs/base.yaml, '${args}']\n")


def test_w_and_b_specs_map_to_bounded_optuna_distributions(tmp_path):
    pytest.importorskip("optuna")
    path = tmp_path / "b.yaml"
    path.write_text(BAYES)
    sweep = load_sweep(path)
    searched, fixed = distributions(sweep["parameters"])
    lr = searched["model.init_args.lr"]
    assert (lr.low, lr.high, lr.log) == (0.001, 0.5, True) and fixed == {"model.init_args.optimizer": "adam"}
    trial = {"model.init_args.lr": 0.01, "model.init_args.net.init_args.hidden": 1}  # categoricals by position
    point = point_of(sweep["parameters"], trial, fixed)
    assert point == {"model.init_args.lr": 0.01, "model.init_args.net.init_args.hidden": [32, 16],
                     "model.init_args.optimizer": "adam"}
    with pytest.raises(SweepError, match="bayes chooses each point from earlier results"):
        expand(sweep, count=3)  # never a silent random search
    with pytest.raises(SweepError, match="bounded distribution"):
        distributions({"a": {"distribution": "normal", "mu": 0, "sigma": 1}})


def test_without_optuna_bayes_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    path = tmp_path / "b.yaml"
    path.write_text(BAYES)
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__",
                        lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name == "optuna"
                        else real_import(name, *a, **k))
    with pytest.raises(SystemExit, match=r'method: bayes needs Optuna .*pip install "litlab\[bayes\]".*never'):
        sweep_runner.main([str(path), "--count", "3", "--in-process", "--out", "sw"])
    assert not list(Path("sw").glob("p*"))


@pytest.mark.timeout(600)
def test_bayes_trials_are_told_the_mean_over_seeds_and_resume_from_their_storage(mnist_dir, tmp_path):
    optuna = pytest.importorskip("optuna")
    path = tmp_path / "b.yaml"
    path.write_text(BAYES)
    extra = ["--", "--data.data_dir", str(mnist_dir), "--data.download", "false", "--data.val_size", "100",
             "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false"]
    out = sweep_runner.main([str(path), "--count", "3", "--seeds", "2", "--in-process", "--out", "sw", *extra])
    study = optuna.load_study(study_name="litlab", storage=f"sqlite:///{(out / 'optuna.db').resolve()}")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in trials] == [0, 1, 2]
    for t in trials:  # the value TPE learnt from is the mean of that point's runs
        [folder] = out.glob(f"p{t.number:02d}_*")
        seeds = [json.loads((folder / f"seed{k}" / "results.json").read_text())["val/acc_best"] for k in (0, 1)]
        assert t.value == pytest.approx(statistics.fmean(seeds))
        assert json.loads((folder / "point.json").read_text())["model.init_args.lr"] == t.params["model.init_args.lr"]
    # Resume: the study and the finished runs are kept, one more trial is asked for and run.
    sweep_runner.main([str(path), "--count", "4", "--seeds", "2", "--in-process", "--out", "sw", *extra])
    study = optuna.load_study(study_name="litlab", storage=f"sqlite:///{(out / 'optuna.db').resolve()}")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4
    assert len(list(out.glob("p*_*/seed*/results.json"))) == 8
