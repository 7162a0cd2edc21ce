"""`litlab report`: HTML + Markdown for a sweep and a run, rendered in headless chromium when it is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from conftest import unavailable
from experiments import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def fake_run(run: Path, acc: float, status: str = "finished", figure: bool = False) -> None:
    """A run directory as `litlab fit` leaves it: results.json, metrics.csv, optionally figures/*.png."""
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"status": status, "test/acc": acc, "val/acc_best": acc,
                                                  "fit_seconds": 1.5, "epochs": 2}))
    lines = ["epoch,step,train/loss,val/loss,val/acc"] + [
        f"{e},{e * 10},,{1 - acc * e / 2:.3f},{acc * (e + 1) / 2:.3f}\n{e},{e * 10},{1.5 - e / 2},," for e in (0, 1)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run / "config.yaml").write_text("model:\n  init_args:\n    lr: 0.1\n")
    if figure:
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.imshow([[1, 0], [0, 1]])
        (run / "figures").mkdir()
        fig.savefig(run / "figures" / "confusion_test.png")
        plt.close(fig)


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for i, (lr, accs) in enumerate(((0.1, (0.97, 0.98)), (1.0, (0.5, None)))):
        point = root / f"p0{i}_lr-{lr}"
        for seed, acc in enumerate(accs):
            if acc is None:  # crashed before writing its results: only the console log exists
                (point / f"seed{seed}.log").write_text("RuntimeError: boom\n")
            else:
                fake_run(point / f"seed{seed}", acc, figure=i == 0 and seed == 0)
        (point / "point.json").write_text(json.dumps({"model.init_args.lr": lr}))
    (root / "sweep.yaml").write_text("method: grid\nmetric: {name: test/acc, goal: maximize}\n")
    return root


def test_report_of_a_sweep_has_table_curves_figures(sweep_dir):
    out = report.main([str(sweep_dir)])
    page, md = out.read_text(), (sweep_dir / "report.md").read_text()
    assert page.count("<img") == 2 and "data:image/png;base64," in page and 'src="http' not in page  # self-contained
    assert "97.50 ± 0.71" in page and "<tr class=best><td>p00_lr-0.1 ★" in page
    assert "| p01_lr-1.0 | 1.0 | 50.00 | 50.00 | 1.50 | 1/2 (incomplete) |" in md
    assert "![learning curves](report_files/curves.png)" in md and (sweep_dir / "report_files" / "curves.png").is_file()
    assert "![p00_lr-0.1/seed0/figures/confusion_test.png](p00_lr-0.1/seed0/figures/confusion_test.png)" in md


def test_report_metrics_adds_columns_and_shows_a_collapsed_seed_as_such(sweep_dir):
    (sweep_dir / "p00_lr-0.1" / "seed2").mkdir()
    (sweep_dir / "p00_lr-0.1" / "seed2" / "results.json").write_text(json.dumps({"status": "collapsed"}))
    for seed, loss in ((0, 0.1), (1, 0.3)):
        results = sweep_dir / "p00_lr-0.1" / f"seed{seed}" / "results.json"
        results.write_text(json.dumps({**json.loads(results.read_text()), "test/loss": loss}))
    report.main([str(sweep_dir), "--metrics", "test/loss"])
    md = (sweep_dir / "report.md").read_text()
    assert "| point | lr | test/acc (%) | test/loss | val/acc_best (%) | fit s | seeds |" in md
    # test/loss is no fraction: not scaled to %; the collapsed seed is counted, not averaged
    assert "| **p00_lr-0.1** ★ | **0.1** | **97.50 ± 0.71** | **0.20 ± 0.14** | **97.50 ± 0.71** | **1.50 ± 0.00** | " \
           "**2/3 (collapsed)** |" in md


def test_report_of_a_single_run_and_a_clear_error(tmp_path):
    fake_run(tmp_path / "run", 0.9, figure=True)
    page = report.main([str(tmp_path / "run")]).read_text()
    assert "<td>test/acc</td><td>0.9</td>" in page and "lr: 0.1" in page and page.count("<img") == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="neither a run directory"):
        report.main([str(tmp_path / "empty")])


def test_headless_chromium_renders_tables_and_images(sweep_dir):
    if CHROMIUM is None:
        unavailable("chromium not installed (apt-get install chromium) to render the report")
    page = report.main([str(sweep_dir)]).read_text()
    # After load, write into the DOM how many tables have rows on screen and how many images decoded.
    probe = ("<script>addEventListener('load',()=>{const b=document.body;b.dataset.tables=[...document.querySelectorAll"
             "('table')].filter(t=>t.offsetHeight>0&&t.rows.length>1).length;b.dataset.images=[...document.images]"
             ".filter(i=>i.complete&&i.naturalWidth>0).length})</script></body>")
    probed = sweep_dir / "probe.html"
    probed.write_text(page.replace("</body>", probe))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
            capture_output=True, text=True, timeout=120).stdout
    assert 'data-tables="2"' in dom and 'data-images="2"' in dom, dom[:500]


def test_a_run_report_is_titled_with_its_experiment_and_shows_figures_before_config(tmp_path):
    run = tmp_path / "runs" / "quickstart" / "version_3"
    fake_run(run, 0.9, figure=True)
    md = (run / "report.md")
    report.main([str(run)])
    text = md.read_text()
    assert text.startswith("# Run quickstart (version_3)")  # the parent folder: config.yaml names no logger
    assert text.index("## Figures") < text.index("## Configuration")


def test_report_of_two_runs_compares_them(tmp_path):
    a, b = tmp_path / "runs" / "mlp" / "version_0", tmp_path / "runs" / "mlp" / "version_1"
    fake_run(a, 0.9)
    fake_run(b, 0.8)
    (b / "config.yaml").write_text("model:\n  init_args:\n    lr: 0.01\n")
    out = report.main([str(a), str(b), "--out", str(tmp_path / "cmp")])
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert out == tmp_path / "cmp" / "comparison.html" and "data:image/png;base64," in out.read_text()
    assert "| mlp/version_0 | finished | 2 | – | 0.9 | – | 0.9 | – | 1.5 |" in md  # final/best metrics, wall time
    assert "| model.init_args.lr | 0.1 | 0.01 |" in md  # the one config value that differs
    # An experiment folder compares its version_* runs, in version order.
    report.main([str(tmp_path / "runs" / "mlp"), "--out", str(tmp_path / "cmp2")])
    md2 = (tmp_path / "cmp2" / "comparison.md").read_text()
    assert md2.index("mlp/version_0") < md2.index("mlp/version_1")


def test_single_point_curves_are_drawn_with_markers(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fake_run(run, 0.9)
    (run / "metrics.csv").write_text("epoch,step,train/loss,val/loss,val/acc\n0,9,,0.5,0.9\n0,9,1.2,,\n")  # 1 epoch
    drawn = []
    monkeypatch.setattr("matplotlib.axes.Axes.plot", lambda self, x, y, **kw: drawn.append((len(x), kw["marker"])))
    assert report.plot_curves({"run": [run]}) is not None
    assert drawn == [(1, "o")] * 3  # train/loss, val/loss, val/acc: one marked point each
