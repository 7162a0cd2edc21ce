"""A sweep directory's runs as rows (results.csv) and as a mean ± std table per point (results.md).

Layout (written by `litlab sweep`): `<sweep>/<point>/point.json` holds the point's parameters, and each seed's
run directory `<sweep>/<point>/seed<k>/` its `results.json`; `<point>/seed<k>.log` is the run's console.
Plain csv + statistics: the tables are a few dozen rows, not worth a pandas dependency.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from runtime import run_record
from runtime.files import write_atomic
from experiments.sweepfile import SEED_KEYS, short_key

OK = ("finished",)


def collect(sweep_dir: Path, sweep: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One dict per run: point, seed, parameters, status and results; failed runs have status but no numbers."""
    rows = []
    for point_file in sorted(Path(sweep_dir).glob("*/point.json")):
        point_dir = point_file.parent
        params = json.loads(point_file.read_text())
        versions = {p.stem for p in point_dir.glob("seed*.log")} | {p.name for p in point_dir.glob("seed*")
                                                                  if p.is_dir()}
        for version in sorted(versions):
            results = run_record.read(point_dir / version)
            status = results.get("status", "running")
            if status == "running":
                status = "incomplete"  # no final results: it crashed, was killed, or is still running
            rows.append({"point": point_dir.name, "seed": version.removeprefix("seed"), "params": params,
                         "status": status, **{k: v for k, v in results.items() if k != "status"}})
    return rows


def _fmt(values: list[float], percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values) * scale:.2f}"


def _percent(column: str) -> bool:
    return any(s in column for s in ("acc", "f1", "recall"))


def summarize(rows: list[dict[str, Any]], metric: str = "test/acc", goal: str = "maximize",
              extra: tuple[str, ...] = ()) -> tuple[list[str], list[list[str]]]:
    """Markdown-ready (header, rows): one row per point, mean ± std over its finished seeds, best point in bold.

    Columns: `metric`, the `extra` metrics (e.g. per-class recall), val/acc_best and the fit time.
    """
    points: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        points.setdefault(r["point"], []).append(r)
    params = [k for k in rows[0]["params"] if k not in SEED_KEYS] if rows else []
    cols = list(dict.fromkeys([metric, *extra, "val/acc_best", "fit_seconds"]))
    header = ["point", *map(short_key, params), *(f"{c} (%)" if _percent(c) else
                                                  ("fit s" if c == "fit_seconds" else c) for c in cols), "seeds"]
    best, best_value = None, None
    for name, runs in points.items():
        ok = [r for r in runs if r["status"] in OK and isinstance(r.get(metric), (int, float))]
        if ok:
            v = statistics.fmean(r[metric] for r in ok)
            if best_value is None or (v > best_value if goal == "maximize" else v < best_value):
                best, best_value = name, v
    table = []
    for name, runs in points.items():
        ok = [r for r in runs if r["status"] in OK]
        others = sorted({r["status"] for r in runs if r["status"] not in OK})
        values = [runs[0]["params"].get(p) for p in params]
        cells = [name, *(v if isinstance(v, str) else json.dumps(v) for v in values)]
        for c in cols:
            vals = [r[c] for r in ok if isinstance(r.get(c), (int, float))]
            cells.append(_fmt(vals, _percent(c)) if vals else " / ".join(others) or "–")
        cells.append(f"{len(ok)}/{len(runs)}" + (f" ({', '.join(others)})" if others else ""))
        if name == best:
            cells = [f"**{c}**" for c in cells]
            cells[0] = f"**{name}** ★"
        table.append(cells)
    return header, table


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows]) + "\n"


def runs_table(rows: list[dict[str, Any]], metric: str) -> tuple[list[str], list[list[str]]]:
    header = ["point", "seed", "status", metric, "epochs", "fit s"]
    body = [[r["point"], r["seed"], r["status"],
             f"{r[metric]:.4f}" if r["status"] in OK and isinstance(r.get(metric), (int, float)) else "–",
             str(r.get("epochs", "–")), f"{r['fit_seconds']:.1f}" if "fit_seconds" in r else "–"] for r in rows]
    return header, body


def write_tables(sweep_dir: Path, rows: list[dict[str, Any]], sweep: dict[str, Any] | None = None) -> str:
    """Write results.csv (every run) and results.md (per point, then per run); return the Markdown."""
    sweep = sweep or {}
    metric = sweep.get("metric", {}).get("name", "test/acc")
    goal = sweep.get("metric", {}).get("goal", "maximize")
    flat = [{"point": r["point"], "seed": r["seed"], **r["params"], **{k: v for k, v in r.items()
             if k not in ("point", "seed", "params")}} for r in rows]
    keys = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) or v is None else v for k, v in r.items()}
                     for r in flat)
    write_atomic(Path(sweep_dir) / "results.csv", buf.getvalue())
    md = [f"# Sweep {Path(sweep_dir).name}\n", f"Mean ± std over seeds of `{metric}` ({goal}); ★ best point; "
          "incomplete, failed, diverged or collapsed runs are counted in `seeds`, not averaged.\n",
          markdown_table(*summarize(rows, metric, goal)), "\n## Runs\n", markdown_table(*runs_table(rows, metric))]
    text = "\n".join(md)
    write_atomic(Path(sweep_dir) / "results.md", text)
    return text
