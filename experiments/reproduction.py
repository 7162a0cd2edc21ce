"""The side-by-side tables of `litlab reproduce`: each report's figures next to what litlab's runs measured.

Reads run directories only (`results.json`, `metrics.csv`, `figures/*.csv`) and writes, atomically:
`docs/reproduction.csv` (one line per report figure: a script can check it), `docs/reproduction.md` (every
report's rows) and `docs/reproduction/<id>.md` (one report: recipe, litlab's choices, tables, figures, commands).

Within noise: a report gives one run, litlab the mean of n seeds with standard deviation s, so the difference
has a standard deviation of about s·√(1 + 1/n); a figure is "within noise" when |difference| ≤ 2·s·√(1 + 1/n),
plus a reading tolerance for figures read off a plot (`kind: approx`). One seed gives no s: "1 seed".
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from callbacks.analysis.figures import plt
from experiments.manifest import experiment_sweep, matching_points
from experiments.sweepfile import litlab_args
from experiments.table import markdown_table
from runtime import run_record
from runtime.files import write_atomic

APPROX_TOLERANCE = {"%": 2.5, "fraction": 0.025}  # half a tick of a plot read by eye
CSV_COLUMNS = ["report", "experiment", "setting", "split", "unit", "report_figure", "kind", "litlab_mean",
               "litlab_std", "seeds", "difference", "within_noise", "budget", "runs", "command", "note"]


def read_metric(run: Path, metric: str) -> float | None:
    """One run's value of `metric`: a results.json key, `key@epoch=N` (metrics.csv, N from 1), or
    `confusion:<stage>:<true>,<pred>` (the fraction of the true class's row in figures/confusion_<stage>.csv)."""
    if metric.startswith("confusion:"):
        _, stage, cell = metric.split(":")
        t, p = (int(i) for i in cell.split(","))
        try:
            rows = list(csv.DictReader((run / "figures" / f"confusion_{stage}.csv").open()))
        except OSError:
            return None
        names = list(dict.fromkeys(r["true"] for r in rows))  # written true-major, in class order
        k = len(names)
        return float(rows[t * k + p]["percent_of_true"]) / 100 if t < k and p < k else None  # as a fraction
    if "@epoch=" in metric:
        key, epoch = metric.split("@epoch=")
        try:
            rows = list(csv.DictReader((run / "metrics.csv").open()))
        except OSError:
            return None
        found = [r[key] for r in rows if r.get(key) not in (None, "") and r.get("epoch") == str(int(epoch) - 1)]
        return float(found[-1]) if found else None
    results = run_record.read(run)
    if results.get("status") not in ("finished", "tested"):
        return None
    value = results.get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def seed_runs(point_dir: Path) -> list[Path]:
    return sorted((p for p in point_dir.glob("seed*") if p.is_dir()), key=lambda p: int(p.name[4:] or 0))


def measure(root: Path, exp: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """litlab's side of one row: per-seed values in the report's unit, mean, std, difference, verdict."""
    point_dir = root / exp["id"] / row["_point"]
    runs = seed_runs(point_dir)
    out: dict[str, Any] = {"runs": str(point_dir), "values": [], "mean": None, "std": None, "diff": None,
                           "verdict": "not run"}
    if row.get("metric") is None:
        out["verdict"] = "cannot be reproduced"
        return out
    scale = 100.0 if row["unit"] == "%" else 1.0
    values = [v * scale for r in runs if (v := read_metric(r, row["metric"])) is not None and math.isfinite(v)]
    if not values:
        statuses = sorted({run_record.status(r, missing="no results.json") for r in runs})
        out["verdict"] = f"no value ({', '.join(statuses)})" if runs else "not run"
        return out
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    if row["figure"] is None:  # a qualitative claim: litlab's number is shown, nothing is compared
        return {**out, "values": values, "mean": mean, "std": std, "verdict": "in kind (no report number)"}
    diff = mean - float(row["figure"])
    if row["unit"] == "s":
        verdict = "in kind (hardware)"
    elif std is None:
        verdict = "1 seed"
    else:
        bound = 2 * std * math.sqrt(1 + 1 / len(values))
        if row.get("kind") == "approx":
            bound += APPROX_TOLERANCE.get(row["unit"], 0.0)
        verdict = "yes" if abs(diff) <= bound else "no"
    return {**out, "values": values, "mean": mean, "std": std, "diff": diff, "verdict": verdict}


def fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "–"
    digits = {"%": 2, "fraction": 4, "loss": 4, "s": 1, "iteration": 0, "count": 0}[unit]
    return f"{x:.{digits}f}"


def litlab_cell(m: dict[str, Any], unit: str) -> str:
    if m["mean"] is None:
        return m["verdict"]
    std = f" ± {fmt(m['std'], unit)}" if m["std"] is not None else ""
    return f"{fmt(m['mean'], unit)}{std} (n={len(m['values'])})"


def report_cell(row: dict[str, Any]) -> str:
    if row["figure"] is None:
        return "in words only"
    unit = "" if row["unit"] == "label" else f" {row['unit']}"
    return f"{row['figure']}{unit}" + (" (approx.)" if row.get("kind") == "approx" else "")


def command_of(exp: dict[str, Any], point_index: int, data_dir: str, root: Path, full: bool = False) -> str:

    sweep = experiment_sweep(exp, {"data_dir": data_dir, "root": str(root)}, full=full)
    args = [a.replace("{seed}", "0") for a in litlab_args(sweep, exp["points"][point_index])]
    return "litlab " + " ".join(f'"{a}"' if " " in a else a for a in args)


def curves_figure(root: Path, exp: dict[str, Any], dest: Path) -> Path | None:
    """Loss and validation accuracy per epoch of every point (seed 0), from the runs' metrics.csv."""
    x = "step" if exp.get("x") == "iteration" else "epoch"  # recipes counted in iterations are drawn by them
    series = []
    for point, folder in zip(exp["points"], exp["point_dirs"]):
        runs = seed_runs(root / exp["id"] / folder)
        if not runs or not (runs[0] / "metrics.csv").is_file():
            continue
        rows = list(csv.DictReader((runs[0] / "metrics.csv").open()))
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items()) or exp["id"]
        series.append((label, rows))
    if not series:
        return None
    if not any(r.get("train/loss") for _, rows in series for r in rows):
        return None  # a `test` experiment: no curves
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for i, (label, rows) in enumerate(series):
        color = f"C{i % 10}"
        for ax, key, style in ((axes[0], "train/loss", ":"), (axes[0], "val/loss", "-"),
                               (axes[1], "train/acc", ":"), (axes[1], "val/acc", "-")):
            pts = [(int(r[x]) + (x == "epoch"), float(r[key])) for r in rows if r.get(key) not in (None, "")]
            if pts:
                ax.plot(*zip(*pts), style, color=color, marker="o" if len(pts) < 30 else None, ms=3,
                        label=label if key.startswith("val") else None)
    for ax, key in zip(axes, ("loss (train dotted, validation solid)", "accuracy (train dotted, validation solid)")):
        ax.set_xlabel("iteration" if x == "step" else "epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{exp['id']} {exp.get('title', '')}: seed 0 of each point")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return write_atomic(dest, buf.getvalue())


def experiment_figures(root: Path, exp: dict[str, Any], fig_dir: Path) -> list[Path]:
    made = []
    if (p := curves_figure(root, exp, fig_dir / f"{exp['id']}_curves.png")) is not None:
        made.append(p)
    for spec in exp.get("figures") or []:
        spec = {"file": spec} if isinstance(spec, str) else spec
        folder = exp["point_dirs"][(matching_points(exp, spec.get("point") or {}) or [0])[0]]
        runs = seed_runs(root / exp["id"] / folder)
        src = runs[0] / "figures" / spec["file"] if runs else None
        if src is not None and src.is_file():
            dest = fig_dir / f"{exp['id']}_{folder}_{spec['file']}"
            write_atomic(dest, src.read_bytes())
            made.append(dest)
    return made


def report_page(m: dict[str, Any], measured: dict[int, dict[str, Any]], root: Path, docs: Path,
                data_dir: str, full: bool = False) -> str:
    fig_dir = docs / "reproduction" / "figures"
    lines = [f"# Report {m['report']}: {m['title']}\n",
             f"Report: `../shared/reports/{m.get('file', '')}`. Data: {m.get('data', 'see each experiment')}. "
             f"Written by `litlab reproduce {m['report']}` from the runs in `{root}/`; do not edit by hand.\n"]
    for exp in m["experiments"]:
        lines.append(f"## {exp['id']} {exp.get('title', '')}\n")
        lines.append(f"- **Report's recipe:** {exp.get('recipe', 'unstated')}")
        for c in exp.get("choices") or []:
            lines.append(f"- **litlab's choice:** {c}")
        seeds = exp.get("seeds") or m.get("seeds", 3)
        lines.append(f"- **Budget:** {budget_of(exp, full)}; {seeds} seed(s) per point; "
                     f"runs in `{root / exp['id']}/`")
        if exp["args"] is not None:
            lines.append(f"- **Command** (seed 0): `{command_of(exp, 0, data_dir, root, full)}`")
        lines.append("")
        rows = [[r["setting"], r["split"], report_cell(r), litlab_cell(measured[id(r)], r["unit"]),
                 fmt(measured[id(r)]["diff"], r["unit"]) if measured[id(r)]["diff"] is not None else "–",
                 measured[id(r)]["verdict"], r.get("note", "")] for r in exp.get("rows") or []]
        if rows:
            lines.append(markdown_table(["setting", "split", "report", "litlab mean ± std", "difference",
                                         "within noise", "note"], rows))
        if exp.get("differences"):  # why litlab and the report differ (the manifest's words, no numbers of runs)
            lines.append(f"**Where litlab and the report differ, and why.** {' '.join(exp['differences'].split())}\n")
        for fig in experiment_figures(root, exp, fig_dir):
            lines.append(f"![{fig.stem}](figures/{fig.name})")
        lines.append("")
    return "\n".join(lines)


def budget_of(exp: dict[str, Any], full: bool) -> str:
    return "as stated (--full)" if full and exp.get("full") else exp.get("budget", "as stated")


def write_docs(manifests: list[dict[str, Any]], out: Path, docs: Path, data_dir: str = "../shared/data",
               full: bool = False, summary_too: bool = True) -> Path:
    """Write reproduction/<id>.md and (with `summary_too`) reproduction.csv and reproduction.md under `docs`;
    return the last file written. `full`: the runs are `--full` ones, which the budget column says."""
    csv_rows, summary, all_rows = [], [], []
    (docs / "reproduction" / "figures").mkdir(parents=True, exist_ok=True)
    for m in manifests:
        root = out / m["report"]
        measured: dict[int, dict[str, Any]] = {}
        for exp in m["experiments"]:
            cmd = f"litlab reproduce {m['report']} --only {exp['id']}" if exp["args"] is not None else ""
            for row in exp.get("rows") or []:
                r = measured[id(row)] = measure(root, exp, row)
                csv_rows.append({
                    "report": m["report"], "experiment": exp["id"], "setting": row["setting"], "split": row["split"],
                    "unit": row["unit"], "report_figure": "" if row["figure"] is None else row["figure"], "kind": row.get("kind", "stated"),
                    "litlab_mean": "" if r["mean"] is None else round(r["mean"], 6),
                    "litlab_std": "" if r["std"] is None else round(r["std"], 6), "seeds": len(r["values"]),
                    "difference": "" if r["diff"] is None else round(r["diff"], 6), "within_noise": r["verdict"],
                    "budget": budget_of(exp, full), "runs": r["runs"], "command": cmd + (" --full" if full else ""),
                    "note": row.get("note", "")})
                all_rows.append([m["report"], exp["id"], row["setting"], row["split"], report_cell(row),
                                 litlab_cell(r, row["unit"]), fmt(r["diff"], row["unit"]) if r["diff"] is not None
                                 else "–", r["verdict"]])
        verdicts = [measured[id(r)]["verdict"] for e in m["experiments"] for r in e.get("rows") or []]
        others = Counter(v for v in verdicts if v not in ("yes", "no"))
        summary.append([f"[{m['report']}](reproduction/{m['report']}.md)", m["title"], str(len(verdicts)),
                        str(verdicts.count("yes")), str(verdicts.count("no")),
                        ", ".join(f"{v}: {n}" for v, n in sorted(others.items())) or "–"])
        write_atomic(docs / "reproduction" / f"{m['report']}.md", report_page(m, measured, root, docs, data_dir, full))
    if not summary_too:
        return docs / "reproduction" / f"{manifests[-1]['report']}.md"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows)
    write_atomic(docs / "reproduction.csv", buf.getvalue())
    text = "\n".join([
        "# Reproduction: the five reports side by side\n",
        "Written by `litlab reproduce all` (or one report at a time) from the run directories named in "
        "`reproduction.csv`; do not edit by hand. " + __doc__.split("\n\n")[2].replace("\n", " ") + "\n",
        markdown_table(["report", "title", "figures", "within noise", "outside noise", "other"], summary),
        "## Every figure\n",
        markdown_table(["report", "experiment", "setting", "split", "report", "litlab mean ± std", "difference",
                        "within noise"], all_rows)])
    return write_atomic(docs / "reproduction.md", text)

