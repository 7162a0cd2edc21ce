"""`litlab reproduce`: manifests, the runs they make, and the side-by-side tables written from those runs."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import REPO, make_mnist_dir, unavailable
from experiments import reproduce
from experiments.manifest import ManifestError, experiment_sweep, load_manifest
from experiments.reproduction import measure, read_metric
from helpers import BASE

MANIFESTS = sorted((REPO / "configs" / "reproduce").glob("[0-9][0-9][0-9].yaml"))


def is_number(figure) -> bool:
    try:
        float(figure)
        return True
    except (TypeError, ValueError):  # null (a claim in words) or a list of labels
        return False


def tiny_manifest(tmp_path: Path, rows: list[dict], **exp) -> Path:
    """A manifest of one 2-point MLP grid on synthetic MNIST: 1 epoch, a few batches, in seconds."""
    experiment = {
        "id": "t-a", "title": "tiny grid", "recipe": "2 epochs", "budget": "as stated",
        "args": ["fit", *BASE, "--data.data_dir", "{data_dir}",
                 "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--data.init_args.val_size",
                 "100", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"],
        "parameters": {"model.init_args.net.init_args.hidden": {"values": [[8], [16]]}},
        "rows": rows, **exp}
    path = tmp_path / "900.yaml"
    path.write_text(yaml.safe_dump({"report": "900", "title": "tiny", "seeds": 2, "experiments": [experiment]}))
    return path


def test_every_shipped_manifest_loads_and_ties_each_row_to_one_point():
    assert MANIFESTS, "no manifests in configs/reproduce"
    for path in MANIFESTS:
        m = load_manifest(path)
        assert m["report"] == path.stem
        for exp in m["experiments"]:
            for row in exp.get("rows") or []:
                assert row["_point"].startswith("p"), (path, exp["id"], row)


def test_the_digest_checklist_has_a_row_for_every_number():
    """Every figure of the digest's cross-report checklist appears as a report figure of its report's manifest."""
    digest = REPO.parent / "shared" / "reports" / "README.md"
    if not digest.is_file():
        unavailable("../shared/reports is not beside the repository")
    text = digest.read_text().split("## Cross-report checklist")[1].split("\n---")[0]
    wanted: dict[str, list[float]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[0].isdigit():
            wanted.setdefault(cells[1], []).append(float(cells[5]))
    have: dict[str, list[float]] = {}
    for path in MANIFESTS:
        m = load_manifest(path)
        have.setdefault(m["report"], []).extend(float(r["figure"]) for e in m["experiments"]
                                                for r in e.get("rows") or [] if is_number(r["figure"]))
    for report, figures in wanted.items():
        missing = Counter(figures) - Counter(have.get(report, []))  # a figure printed twice needs two rows
        assert not missing, f"report {report}: checklist figures with no manifest row: {sorted(missing)}"


@pytest.mark.parametrize("change, message", [
    ({"rows": [{"setting": "x", "split": "test", "figure": 1, "unit": "%", "metric": "test/acc"}]},
     "matches 2 of the experiment's 2 grid points"),
    ({"rows": [{"setting": "x", "split": "test", "figure": 1, "unit": "%", "metric": None,
                "point": {"model.init_args.net.init_args.hidden": [8]}}]}, "needs a `note`"),
    ({"rows": [{"setting": "x", "split": "test", "figure": 1, "unit": "percent", "metric": "test/acc",
                "point": {"model.init_args.net.init_args.hidden": [8]}}]}, "unit 'percent'"),
    ({"args": ["--config", "x.yaml"], "rows": []}, "starting with fit or test"),
])
def test_a_bad_manifest_says_what_to_fix(tmp_path, change, message):
    path = tiny_manifest(tmp_path, **change)
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)
    with pytest.raises(SystemExit, match="litlab reproduce: .*" + message.split("`")[0][:20]):
        reproduce.main([str(path), "--out", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")])
    assert not (tmp_path / "docs").exists()  # nothing half-written


def write_run(run: Path, **results) -> None:
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"status": "finished", **results}))


def test_noise_rule_uses_the_seed_spread_and_marks_one_seed_and_failures(tmp_path):
    exp = {"id": "e", "points": [{}]}
    for k, acc in enumerate((0.90, 0.92, 0.94)):
        write_run(tmp_path / "e" / "p00" / f"seed{k}", **{"test/acc": acc})
    row = {"_point": "p00", "metric": "test/acc", "unit": "%", "figure": 92.0}
    m = measure(tmp_path, exp, row)
    assert m["values"] == pytest.approx([90.0, 92.0, 94.0]) and m["std"] == pytest.approx(2.0)
    bound = 2 * 2.0 * math.sqrt(1 + 1 / 3)  # 4.62 points
    assert measure(tmp_path, exp, {**row, "figure": 92.0 + bound - 0.01})["verdict"] == "yes"
    assert measure(tmp_path, exp, {**row, "figure": 92.0 + bound + 0.01})["verdict"] == "no"
    # A plot reading gets its tolerance on top; a fraction row is not scaled.
    assert measure(tmp_path, exp, {**row, "figure": 92.0 + bound + 2.0, "kind": "approx"})["verdict"] == "yes"
    assert measure(tmp_path, exp, {**row, "unit": "fraction", "figure": 0.92})["mean"] == pytest.approx(0.92)
    # A diverged seed gives no number; it is not averaged as one.
    (tmp_path / "e" / "p00" / "seed2" / "results.json").write_text(json.dumps({"status": "diverged"}))
    assert measure(tmp_path, exp, row)["values"] == pytest.approx([90.0, 92.0])
    assert measure(tmp_path, exp, {**row, "_point": "p01"})["verdict"] == "not run"
    assert measure(tmp_path, exp, {**row, "metric": None})["verdict"] == "cannot be reproduced"
    qualitative = measure(tmp_path, exp, {**row, "figure": None})
    assert qualitative["verdict"] == "in kind (no report number)" and qualitative["diff"] is None


def test_metrics_csv_epoch_and_confusion_cells(tmp_path):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,train/loss,val/acc\n0,9,,0.5\n0,9,0.40,\n1,19,,0.6\n1,19,0.25,\n")
    assert read_metric(run, "train/loss@epoch=1") == pytest.approx(0.40)
    assert read_metric(run, "train/loss@epoch=2") == pytest.approx(0.25)
    assert read_metric(run, "val/acc@epoch=3") is None
    cells = [["true", "predicted", "count", "percent_of_true"]]
    cells += [[t, p, 1, 10.0 * i] for i, (t, p) in enumerate((t, p) for t in "abc" for p in "abc")]
    with (run / "figures" / "confusion_test.csv").open("w", newline="") as f:
        csv.writer(f).writerows(cells)
    assert read_metric(run, "confusion:test:1,2") == pytest.approx(0.50)  # row b, column c: the 6th cell
    assert read_metric(run, "confusion:test:2,0") == pytest.approx(0.60)  # a fraction, scaled like accuracies


def test_a_tiny_manifest_end_to_end(tmp_path):
    data = make_mnist_dir(tmp_path / "data", n_train=400, n_test=100)
    rows = [{"setting": "[8], test accuracy", "point": {"model.init_args.net.init_args.hidden": [8]},
             "split": "test", "figure": 50.0, "unit": "%", "metric": "test/acc"},
            {"setting": "[16], epoch-1 training loss", "point": {"model.init_args.net.init_args.hidden": [16]},
             "split": "train", "figure": 2.3, "unit": "loss", "metric": "train/loss@epoch=1"},
            {"setting": "unseeded figure", "split": "test", "figure": 1.0, "unit": "%", "metric": None,
             "point": {"model.init_args.net.init_args.hidden": [8]}, "note": "depends on an unseeded init"}]
    path = tiny_manifest(tmp_path, rows, figures=["missing.png"])
    out, docs = tmp_path / "runs", tmp_path / "docs"
    argv = [str(path), "--data-dir", str(data), "--out", str(out), "--docs", str(docs), "--in-process"]
    reproduce.main(argv)
    runs = sorted(out.glob("900/t-a/p*/seed*/results.json"))
    assert len(runs) == 4  # 2 points x 2 seeds
    # The table's numbers are the runs' numbers: recompute them from results.json and metrics.csv.
    accs = [100 * json.loads((out / "900/t-a/p00_hidden-8" / f"seed{k}" / "results.json").read_text())["test/acc"]
            for k in (0, 1)]
    table = list(csv.DictReader((docs / "reproduction.csv").open()))
    assert [r["setting"] for r in table] == [r["setting"] for r in rows]
    first = table[0]
    assert float(first["litlab_mean"]) == pytest.approx(statistics.fmean(accs), abs=1e-4)
    assert float(first["litlab_std"]) == pytest.approx(statistics.stdev(accs), abs=1e-4)
    assert float(first["difference"]) == pytest.approx(statistics.fmean(accs) - 50.0, abs=1e-4)
    assert first["seeds"] == "2" and first["runs"].endswith("p00_hidden-8")
    losses = [float(next(r for r in csv.DictReader((out / "900/t-a/p01_hidden-16" / f"seed{k}" /
                                                    "metrics.csv").open()) if r["train/loss"])["train/loss"])
              for k in (0, 1)]
    assert float(table[1]["litlab_mean"]) == pytest.approx(statistics.fmean(losses), abs=1e-4)
    assert table[2]["within_noise"] == "cannot be reproduced" and table[2]["litlab_mean"] == ""
    page = (docs / "reproduction" / "900.md").read_text()
    assert "| [8], test accuracy | test | 50.0 % |" in page and "figures/t-a_curves.png" in page
    assert (docs / "reproduction" / "figures" / "t-a_curves.png").stat().st_size > 1000
    assert "[900](reproduction/900.md)" in (docs / "reproduction.md").read_text()
    # A second call finds every run finished and trains nothing: the results are unchanged.
    before = {p: p.stat().st_mtime_ns for p in runs}
    reproduce.main(argv)
    assert {p: p.stat().st_mtime_ns for p in runs} == before
    # Tables from a folder without this report's runs leave the written summary as it was (no "not run" rows).
    summary = (docs / "reproduction.md").read_text()
    reproduce.main([str(path), "--table-only", "--out", str(tmp_path / "elsewhere"), "--docs", str(docs)])
    assert (docs / "reproduction.md").read_text() == summary and "not run" not in summary


def test_an_experiment_with_only_unreproducible_figures_runs_nothing(tmp_path, capsys):
    path = tiny_manifest(tmp_path, [{"setting": "leaderboard", "split": "test", "figure": 82.41, "unit": "%",
                                     "metric": None, "note": "a hidden test set"}], parameters=None)
    m = yaml.safe_load(path.read_text())
    del m["experiments"][0]["args"]
    path.write_text(yaml.safe_dump(m))
    docs = tmp_path / "docs"
    reproduce.main([str(path), "--out", str(tmp_path / "runs"), "--docs", str(docs)])
    assert not (tmp_path / "runs").exists()
    row = next(csv.DictReader((docs / "reproduction.csv").open()))
    assert row["within_noise"] == "cannot be reproduced" and row["note"] == "a hidden test set"


def test_seed_placeholder_reaches_each_run(tmp_path, capsys):
    path = tiny_manifest(tmp_path, [], full=["--model.init_args.net.init_args.checkpoint", "{root}/x/seed{seed}.ckpt"])
    reproduce.main([str(path), "--out", str(tmp_path / "runs"), "--dry-run", "--full"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 4
    assert f"{tmp_path / 'runs' / '900'}/x/seed0.ckpt" in lines[0] and "/x/seed1.ckpt" in lines[1]
    # Without --out, full-recipe runs get their own folder: a reduced run is never skipped as if it were full.
    reproduce.main([str(path), "--dry-run", "--full"])
    assert "runs/reproduce_full/900/x/seed0.ckpt" in capsys.readouterr().out


def shipped_experiments() -> list:
    return [pytest.param(m, e, id=e["id"]) for p in MANIFESTS for m in [load_manifest(p)]
            for e in m["experiments"] if e["args"] is not None]


@pytest.mark.parametrize("manifest, exp", shipped_experiments())
def test_every_shipped_experiment_builds_its_trainer_model_and_data(manifest, exp, tmp_path):
    """Each experiment's command (first grid point, seed 0) parses and instantiates: no typo waits for a long run.
    A checkpoint of an earlier experiment (under `{root}`) is left out: that run does not exist here."""
    from cli import cli_main
    from experiments.sweep import resolve_configs
    from experiments.sweepfile import litlab_args

    root = tmp_path / "root"
    sweep = experiment_sweep(exp, {"data_dir": str(tmp_path), "root": str(root)}, full=False)
    argv = [a.replace("{seed}", "0") for a in resolve_configs(litlab_args(sweep, exp["points"][0]))]
    while later := [i for i, a in enumerate(argv) if a.startswith(str(root))]:  # --key <earlier run's file>
        del argv[later[0] - 1:later[0] + 1]
    assert argv[0] in ("fit", "test")  # run=False builds without a subcommand
    cli = cli_main([*argv[1:], "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.trainer is not None and cli.model is not None and cli.datamodule is not None
