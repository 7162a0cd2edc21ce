"""`litlab report DIR`: one self-contained HTML page (images inlined as base64) and its Markdown twin for a run
directory or a sweep directory: configuration, results table, learning curves overlaid across points, and
every analysis figure (`figures/*.png`) the runs made.

Written into DIR: `report.html`, `report.md`, and `report_files/curves.png` (the Markdown links to it and to the
runs' own figures by relative path).
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path
from typing import Any

from experiments.render import CSS, html_table, img_tag, plot_curves
from experiments.table import collect, markdown_table, runs_table, summarize
from runtime import run_record
from runtime.files import write_atomic


def experiment_name(run: Path) -> str:
    """The experiment a run belongs to: its logger's `name` in config.yaml, else its parent folder's name."""
    config = run / "config.yaml"
    if config.is_file():
        import yaml

        logger = ((yaml.safe_load(config.read_text()) or {}).get("trainer") or {}).get("logger")
        logger = logger[0] if isinstance(logger, list) and logger else logger
        if isinstance(logger, dict) and (logger.get("init_args") or {}).get("name"):
            return str(logger["init_args"]["name"])
    return run.resolve().parent.name


def build(directory: Path, extra: tuple[str, ...] = ()) -> tuple[str, str]:
    """(html, markdown) for a sweep directory (has */point.json) or a single run directory (has results.json);
    `extra`: more metrics for the sweep's per-point table (mean ± std), after the sweep's own."""
    directory = Path(directory)
    is_sweep = any(directory.glob("*/point.json"))
    title = f"Sweep {directory.name}" if is_sweep else f"Run {experiment_name(directory)} ({directory.name})"
    H = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{CSS}</style>"
         f"</head><body><h1>{html.escape(title)}</h1>"]
    M = [f"# {title}\n"]
    if is_sweep:
        sweep_file = directory / "sweep.yaml"
        sweep: dict[str, Any] = {}
        if sweep_file.is_file():
            import yaml

            sweep = yaml.safe_load(sweep_file.read_text()) or {}
        rows = collect(directory)
        metric = sweep.get("metric", {}).get("name", "test/acc")
        goal = sweep.get("metric", {}).get("goal", "maximize")
        groups: dict[str, list[Path]] = {}
        for r in rows:
            groups.setdefault(r["point"], []).append(directory / r["point"] / f"seed{r['seed']}")
        runs = [p for ps in groups.values() for p in ps]
        config_text = sweep_file.read_text() if sweep_file.is_file() else "(no sweep.yaml)"
        summary, per_run = summarize(rows, metric, goal, tuple(extra)), runs_table(rows, metric)
        H += ["<h2>Results</h2>", f"<p>Mean ± std over seeds of <code>{html.escape(metric)}</code> ({goal}); ★ best "
              "point; incomplete, failed, diverged or collapsed runs are counted in seeds, not averaged.</p>",
              html_table(*summary),
              "<h3>Runs</h3>", html_table(*per_run)]
        M += ["## Results\n", f"Mean ± std over seeds of `{metric}` ({goal}); ★ best point.\n",
              markdown_table(*summary), "\n### Runs\n", markdown_table(*per_run)]
    else:
        if not run_record.path(directory).is_file() and not (directory / "metrics.csv").is_file():
            raise SystemExit(f"litlab report: {directory} is neither a run directory (results.json, metrics.csv) "
                             "nor a sweep directory (*/point.json); give the folder `litlab fit` or "
                             "`litlab sweep` wrote.")
        results = run_record.read(directory)
        groups, runs = {directory.name: [directory]}, [directory]
        config_file = directory / "config.yaml"
        config_text = config_file.read_text() if config_file.is_file() else "(no config.yaml)"
        table = (["metric", "value"], [[k, str(v)] for k, v in sorted(results.items())])
        H += ["<h2>Results</h2>", html_table(*table)]
        M += ["## Results\n", markdown_table(*table)]
    curves = plot_curves(groups)
    if curves:
        path = write_atomic(directory / "report_files" / "curves.png", curves)
        H += ["<h2>Learning curves</h2>", img_tag(curves, "learning curves")]
        M += ["\n## Learning curves\n", f"![learning curves]({path.relative_to(directory)})\n"]
    figures = [(run, png) for run in runs for png in sorted((run / "figures").glob("*.png"))]
    if figures:
        H.append("<h2>Figures</h2>")
        M.append("\n## Figures\n")
        for run, png in figures:
            caption = str(png.relative_to(directory))
            H.append(f"<figure>{img_tag(png.read_bytes(), caption)}<figcaption>{html.escape(caption)}</figcaption>"
                     "</figure>")
            M.append(f"![{caption}]({caption})\n")
    H += ["<h2>Configuration</h2>", f"<pre>{html.escape(config_text)}</pre>"]
    M += ["\n## Configuration\n", "```yaml\n" + config_text.rstrip() + "\n```\n"]
    H.append("</body></html>")
    return "\n".join(H), "\n".join(M)


def main(argv: list[str] | None = None) -> Path:
    from experiments.compare import build as build_comparison, expand, is_run

    p = argparse.ArgumentParser(prog="litlab report", description="Write report.html (self-contained) and report.md "
                                "for a run directory or a `litlab sweep` directory; given several run directories "
                                "(or an experiment folder runs/<name>/), compare them: comparison.html and .md with "
                                "final/best metrics, wall time, the config values that differ and overlaid curves.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directory (runs/<name>/version_<n>), sweep directory "
                   "(runs/sweeps/<name>), or experiment folder (runs/<name>)")
    p.add_argument("--out", default=None, help="where a comparison goes (default: runs/comparison)")
    p.add_argument("--metrics", nargs="+", default=[], metavar="METRIC",
                   help="sweep: more columns for the per-point table, e.g. test/recall/3 test/acc")
    opts = p.parse_args(sys.argv[2:] if argv is None else argv)
    directories = [Path(d) for d in opts.dirs]
    for directory in directories:
        if not directory.is_dir():
            raise SystemExit(f"litlab report: {directory} is not a directory; give a run or sweep directory.")
    one = directories[0]
    if len(directories) == 1 and (is_run(one) or any(one.glob("*/point.json"))):
        page, md = build(one, tuple(opts.metrics))
        write_atomic(one / "report.md", md)
        out = write_atomic(one / "report.html", page)
        print(f"Wrote {out} and {one / 'report.md'}")
        return out
    runs = expand(directories)
    folder = Path(opts.out or "runs/comparison")
    page, md = build_comparison(runs, folder)
    write_atomic(folder / "comparison.md", md)
    out = write_atomic(folder / "comparison.html", page)
    print(f"Compared {len(runs)} runs: wrote {out} and {folder / 'comparison.md'}")
    return out
