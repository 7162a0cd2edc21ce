"""A sweep survives its runs: one diverges, one is SIGKILLed, one collapses, another still finishes; the tables say
which is which, and running the sweep again runs only the killed point."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from conftest import REPO
from experiments import sweep as sweep_runner

# One swept `--config=<file>` per point (W&B's formatting), each a small delta over configs/base.yaml.
POINTS = {
    "ok": "model:\n  init_args:\n    lr: 0.1\n",
    "diverges": "model:\n  init_args:\n    lr: 1000.0\n    momentum: 0.0\n",  # DivergenceGuard stops it
    "killed": "trainer:\n  callbacks:\n    - class_path: helpers.faults.KillAtStep\n      init_args: {step: 3}\n",
    "collapses": "collapse:\n  patience: 1\nmodel:\n  init_args:\n    net: helpers.faults.OneClassNet\n",  # CollapseGuard
}


@pytest.mark.timeout(600)  # subprocesses / several processes: a longer limit than the default
@pytest.mark.slow  # six CLI subprocesses (the runner's default mode: only a child can be SIGKILLed): ~30 s
def test_a_sweep_with_a_diverged_and_a_killed_run_finishes_the_rest_and_says_so(mnist_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    for name, text in POINTS.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    path = tmp_path / "faults.yaml"
    path.write_text(
        "program: cli.py\nmethod: grid\nmetric: {name: test/acc, goal: maximize}\nparameters:\n"
        f"  config: {{values: {json.dumps([f'{n}.yaml' for n in POINTS])}}}\n"  # relative to the cwd, tmp_path
        f"command: [litlab, fit, --config, {REPO / 'configs' / 'base.yaml'}, '${{args}}']\n")
    # The children import the fault callbacks from tests/helpers.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = [str(path), "--out", "sw", "--", "--data.data_dir", str(mnist_dir), "--data.download", "false",
           "--data.val_size", "100", "--data.batch_size", "32", "--model.net.hidden", "[16]",
           "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false"]
    out = sweep_runner.main(run)
    progress = capsys.readouterr().out
    names = sorted(p.parent.name for p in out.glob("*/point.json"))
    assert [n.split("-")[-1] for n in names] == ["ok.yaml", "diverges.yaml", "killed.yaml", "collapses.yaml"], names
    ok, diverged, killed, collapsed = names
    assert f"[1/4] {ok} seed0: finished test/acc=" in progress
    assert f"[2/4] {diverged} seed0: diverged exit code 1" in progress
    assert f"[3/4] {killed} seed0: killed exit code -9" in progress
    assert f"[4/4] {collapsed} seed0: collapsed exit code 1" in progress

    rows = {r["point"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows[ok]["status"] == "finished" and float(rows[ok]["test/acc"]) >= 0.9
    assert rows[diverged]["status"] == "diverged" and rows[diverged]["test/acc"] == ""  # no number to compare
    assert rows[killed]["status"] == "killed" and rows[killed]["test/acc"] == ""
    assert rows[collapsed]["status"] == "collapsed" and rows[collapsed]["test/acc"] == ""
    assert "litlab: the model collapsed" in (out / collapsed / "seed0.log").read_text()
    assert "SIGKILL" in json.loads((out / killed / "seed0" / "results.json").read_text())["message"]
    md = (out / "results.md").read_text().splitlines()
    line = {name: next(x for x in md if x.startswith(f"| {name} ") or x.startswith(f"| **{name}**")) for name in names}
    assert "★" in line[ok] and "1/1" in line[ok]
    assert "| diverged |" in line[diverged] and "0/1 (diverged)" in line[diverged]
    assert "| killed |" in line[killed] and "0/1 (killed)" in line[killed]
    assert "| collapsed |" in line[collapsed] and "0/1 (collapsed)" in line[collapsed]

    # The kill was transient (say, the OOM killer): the next sweep runs only that point, and it finishes.
    (tmp_path / "killed.yaml").write_text(POINTS["ok"])
    sweep_runner.main(run)
    progress = capsys.readouterr().out
    assert f"{ok} seed0: finished already, skipped" in progress
    assert f"{diverged} seed0: diverged already, skipped" in progress
    assert f"{collapsed} seed0: collapsed already, skipped" in progress
    assert f"[3/4] {killed} seed0: finished test/acc=" in progress
    rows = {r["point"]: r["status"] for r in csv.DictReader((out / "results.csv").open())}
    assert rows == {ok: "finished", diverged: "diverged", killed: "finished", collapsed: "collapsed"}
