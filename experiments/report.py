"""`litlab report DIR`: one self-contained HTML page (images inlined as base64) and its Markdown twin for a run
directory or a sweep directory: configuration, results table, learning curves overlaid across points, and
every analysis figure (`figures/*.png`) the runs made.

Written into DIR: `report.html`, `report.md`, and `report_files/curves.png` (the Markdown links to it and to the
runs' own figures by relative path).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import sys
from pathlib import Path
from typing import Any

from callbacks.artifacts import plt, write_atomic
from experiments.table import collect, markdown_table, runs_table, summarize

CURVES = ("train/loss", "val/loss", "val/acc")
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.best{background:#fff4c2;font-weight:bold}
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:85%}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:85%;color:#555}"""


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Per metric, (epoch, value) from the CSV logger's metrics.csv (train and val rows are separate lines)."""
    path = run / "metrics.csv"
    curves: dict[str, list[tuple[int, float]]] = {k: [] for k in CURVES}
    if not path.is_file():
        return curves
    for row in csv.DictReader(path.open()):
        for k in CURVES:
            if row.get(k) not in (None, "") and row.get("epoch") not in (None, ""):
                curves[k].append((int(float(row["epoch"])), float(row[k])))
    return curves


def plot_curves(groups: dict[str, list[Path]]) -> bytes | None:
    """One panel per metric; one colour per point, one thin line per seed. PNG bytes, None without data."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.8))
    drawn = False
    try:
        for colour, (label, runs) in enumerate(groups.items()):
            for j, run in enumerate(runs):
                curves = read_curves(run)
                for ax, key in zip(axes, CURVES):
                    if curves[key]:
                        x, y = zip(*curves[key])
                        ax.plot(x, y, color=f"C{colour % 10}", lw=1.2, alpha=0.8, label=label if j == 0 else None)
                        drawn = True
        if not drawn:
            return None
        for ax, key in zip(axes, CURVES):
            ax.set(title=key, xlabel="epoch")
            ax.grid(alpha=0.3)
        axes[-1].legend(fontsize=7, loc="lower right")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        best = any("★" in str(c) for c in r)
        cells = "".join(f"<td>{html.escape(str(c).replace('**', ''))}</td>" for c in r)
        out.append(f'<tr{" class=best" if best else ""}>{cells}</tr>')
    return "\n".join(out + ["</table>"])


def img_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def build(directory: Path, extra: tuple[str, ...] = ()) -> tuple[str, str]:
    """(html, markdown) for a sweep directory (has */point.json) or a single run directory (has results.json);
    `extra`: more metrics for the sweep's per-point table (mean ± std), after the sweep's own."""
    directory = Path(directory)
    is_sweep = any(directory.glob("*/point.json"))
    title = f"{'Sweep' if is_sweep else 'Run'} {directory.name}"
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
        results_file = directory / "results.json"
        if not results_file.is_file() and not (directory / "metrics.csv").is_file():
            raise SystemExit(f"litlab report: {directory} is neither a run directory (results.json, metrics.csv) "
                             "nor a sweep directory (*/point.json); give the folder `litlab fit` or "
                             "`litlab sweep` wrote.")
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
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
    H += ["<h2>Configuration</h2>", f"<pre>{html.escape(config_text)}</pre>"]
    M += ["\n## Configuration\n", "```yaml\n" + config_text.rstrip() + "\n```\n"]
    figures = [(run, png) for run in runs for png in sorted((run / "figures").glob("*.png"))]
    if figures:
        H.append("<h2>Figures</h2>")
        M.append("\n## Figures\n")
        for run, png in figures:
            caption = str(png.relative_to(directory))
            H.append(f"<figure>{img_tag(png.read_bytes(), caption)}<figcaption>{html.escape(caption)}</figcaption>"
                     "</figure>")
            M.append(f"![{caption}]({caption})\n")
    H.append("</body></html>")
    return "\n".join(H), "\n".join(M)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="litlab report", description="Write report.html (self-contained) and report.md "
                                "for a run directory or a `litlab sweep` directory.")
    p.add_argument("dir", help="run directory (runs/<name>/version_<n>) or sweep directory (runs/sweeps/<name>)")
    p.add_argument("--metrics", nargs="+", default=[], metavar="METRIC",
                   help="sweep: more columns for the per-point table, e.g. test/recall/3 test/acc")
    opts = p.parse_args(sys.argv[2:] if argv is None else argv)
    directory = Path(opts.dir)
    if not directory.is_dir():
        raise SystemExit(f"litlab report: {directory} is not a directory; give a run or sweep directory.")
    page, md = build(directory, tuple(opts.metrics))
    write_atomic(directory / "report.md", md)
    out = write_atomic(directory / "report.html", page)
    print(f"Wrote {out} and {directory / 'report.md'}")
    return out
