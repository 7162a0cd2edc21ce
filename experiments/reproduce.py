"""`litlab reproduce REPORT`: run a report's reproduction manifest, then write the side-by-side tables.

A manifest (`configs/reproduce/<id>.yaml`, one per report in `../shared/reports/`) lists the report's experiments:
what the report states (its recipe and its figures, verbatim), what litlab chose where the report is silent, and
the litlab command that reproduces the recipe, as a W&B-style grid (`parameters`) over a base command (`args`).
Each experiment runs through the sweep runner (`experiments.sweep.run_points`): one run directory per point
and seed, `runs/reproduce/<id>/<experiment>/<point>/seed<k>/`, finished runs skipped, so an interrupted
reproduction resumes where it stopped. Then `experiments.reproduction` reads every run's `results.json`
(and `metrics.csv`, figures) and writes `docs/reproduction.md`, `docs/reproduction.csv` and
`docs/reproduction/<id>.md` with figures: every number there comes from a run directory named beside it.

    litlab reproduce 002                       # run report 002's manifest (3 seeds a point), write the docs
    litlab reproduce all --table-only          # re-write the docs from the runs already made
    litlab reproduce 002 --only 002-d --full   # the full recipe where the manifest runs a reduced budget

Placeholders in `args` and `full`: `{data_dir}` (--data-dir), `{root}` (the report's run folder), `{seed}`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from datamodules.location import default_data_dir
from experiments.sweep import ROOT, run_points
from experiments.sweepfile import SweepError, expand, point_name

MANIFESTS = ROOT / "configs" / "reproduce"
UNITS = ("%", "fraction", "loss", "s", "iteration", "count", "label")


class ManifestError(ValueError):
    """A manifest litlab cannot run; the message names the file, the experiment and what to fix."""


def find_manifests(name: str) -> list[Path]:
    """`002` → configs/reproduce/002.yaml; `all` → every manifest there; otherwise a path to one."""
    if name == "all":
        return sorted(MANIFESTS.glob("[0-9][0-9][0-9].yaml"))
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ManifestError(f"manifest {path} not found.")
        return [path]
    if (MANIFESTS / f"{name}.yaml").is_file():
        return [MANIFESTS / f"{name}.yaml"]
    known = ", ".join(p.stem for p in sorted(MANIFESTS.glob("[0-9][0-9][0-9].yaml")))
    raise ManifestError(f"no manifest for report {name!r}: give one of {known}, `all`, or a manifest's path.")


def load_manifest(path: Path) -> dict[str, Any]:
    """Read and check a manifest: every experiment runnable, every row tied to a point of its grid."""
    try:
        m = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ManifestError(f"{path} is not valid YAML: {err}") from None
    where = str(path)
    if not isinstance(m, dict) or not isinstance(m.get("experiments"), list) or not m["experiments"]:
        raise ManifestError(f"{where}: a manifest needs `report`, `title` and a list of `experiments`.")
    for key in ("report", "title"):
        if key not in m:
            raise ManifestError(f"{where}: missing `{key}`.")
    m["report"], m["_path"] = str(m["report"]), str(path)
    seen: set[str] = set()
    for exp in m["experiments"]:
        eid = exp.get("id") if isinstance(exp, dict) else None
        if not eid or eid in seen:
            raise ManifestError(f"{where}: every experiment needs a unique `id` ({eid!r} is missing or repeated).")
        seen.add(eid)
        runnable = [r for r in exp.get("rows") or [] if r.get("metric") is not None] or exp.get("figures")
        if "args" not in exp and not runnable:
            exp["args"] = None  # only figures no run can give (e.g. a hidden test set): nothing to run
        elif not isinstance(exp.get("args"), list) or not exp["args"] or exp["args"][0] not in ("fit", "test"):
            raise ManifestError(f"{where}, {eid}: `args` must be litlab's arguments, starting with fit or test.")
        exp["points"] = points_of(exp, where)
        exp["point_dirs"] = [point_name(i, p) for i, p in enumerate(exp["points"])]  # the runner's folder names
        for row in exp.get("rows") or []:
            check_row(row, exp, where)
    return m


def points_of(exp: dict[str, Any], where: str) -> list[dict[str, Any]]:
    params = exp.get("parameters") or {}
    if not params:
        return [{}]
    try:
        return expand({"method": "grid", "parameters": params})
    except SweepError as err:
        raise ManifestError(f"{where}, {exp['id']}: {err}") from None


def check_row(row: dict[str, Any], exp: dict[str, Any], where: str) -> None:
    eid = exp["id"]
    for key in ("setting", "figure", "unit", "split"):
        if key not in row:
            raise ManifestError(f"{where}, {eid}: a row needs `{key}` ({row}).")
    if row["unit"] not in UNITS:
        raise ManifestError(f"{where}, {eid}, {row['setting']!r}: unit {row['unit']!r} is not one of {UNITS}.")
    if row.get("metric") is None and not row.get("note"):
        raise ManifestError(f"{where}, {eid}, {row['setting']!r}: a row without a metric needs a `note` saying "
                            "why litlab cannot give that number.")
    point = row.get("point") or {}
    matches = matching_points(exp, point)
    if len(matches) != 1:
        raise ManifestError(f"{where}, {eid}, {row['setting']!r}: `point` {point} matches {len(matches)} of the "
                            f"experiment's {len(exp['points'])} grid points; it must name exactly one.")
    row["_point"] = exp["point_dirs"][matches[0]]


def matching_points(exp: dict[str, Any], point: dict[str, Any]) -> list[int]:
    """Indices of the grid points whose values include every key of `point` (a partial point)."""
    return [i for i, p in enumerate(exp["points"]) if all(p.get(k) == v for k, v in point.items())]


def fill(args: list[Any], values: dict[str, str]) -> list[str]:
    """Substitute `{data_dir}` and `{root}` (the runner fills `{seed}` per run)."""
    out = []
    for a in map(str, args):
        for k, v in values.items():
            a = a.replace("{" + k + "}", v)
        out.append(a)
    return out


def experiment_sweep(exp: dict[str, Any], values: dict[str, str], full: bool) -> dict[str, Any]:
    """The experiment as a W&B grid sweep over litlab's command (the runner's input, and `wandb agent`'s)."""
    args = fill(exp["args"], values) + (fill(exp.get("full") or [], values) if full else [])
    return {"method": "grid", "program": "cli.py", "parameters": exp.get("parameters") or {},
            "metric": {"name": "test/acc", "goal": "maximize"},
            "command": ["${env}", "${interpreter}", "${program}", *args, "${args}"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="litlab reproduce",
        description="Re-run a report's experiments from its manifest (configs/reproduce/<id>.yaml) and write the "
                    "side-by-side tables: report figure | litlab mean ± std | difference | within noise.",
        epilog="Reports: " + ", ".join(p.stem for p in sorted(MANIFESTS.glob("[0-9][0-9][0-9].yaml"))) + ". Runs go to "
               "<out>/<id>/<experiment>/<point>/seed<k>/; finished runs are skipped, so a stopped reproduction "
               "resumes. Docs: docs/reproduction.md (every report), docs/reproduction/<id>.md, docs/reproduction.csv.")
    p.add_argument("report", help="a report id (000 … 004), `all`, or a manifest's path")
    p.add_argument("--data-dir", default=None,
                   help="folder with MNIST/raw and cifar-10-batches-bin (default $LITLAB_DATA, else ~/.cache/litlab)")
    p.add_argument("--out", default=None, help="run folder (default runs/reproduce; runs/reproduce_full with --full, "
                                               "so a reduced run is never taken for a full one)")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="where the tables and figures go (default docs/)")
    p.add_argument("--only", default=None, help="comma-separated experiment ids to run (tables cover all)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per point for every experiment (default: manifest's)")
    p.add_argument("--full", action="store_true", help="run the full recipe where the manifest runs a reduced budget")
    p.add_argument("--table-only", action="store_true", help="run nothing; write the docs from existing runs")
    p.add_argument("--in-process", action="store_true", help="run in this process (no 5 s start-up per run)")
    p.add_argument("--dry-run", action="store_true", help="print each run's arguments and stop")
    return p


def main(argv: list[str] | None = None) -> Path:
    from experiments.reproduction import write_docs

    opts = build_parser().parse_args(sys.argv[2:] if argv is None else argv)
    try:
        manifests = [load_manifest(p) for p in find_manifests(opts.report)]
    except ManifestError as err:
        raise SystemExit(f"litlab reproduce: {err}") from None
    only = set(opts.only.split(",")) if opts.only else None
    out = Path(opts.out or ("runs/reproduce_full" if opts.full else "runs/reproduce"))
    if not opts.table_only:
        for m in manifests:
            root = out / m["report"]
            values = {"data_dir": opts.data_dir or default_data_dir(), "root": str(root)}
            for exp in m["experiments"]:
                if (only and exp["id"] not in only) or exp["args"] is None:
                    continue
                seeds = opts.seeds or exp.get("seeds") or m.get("seeds", 3)
                print(f"== {m['report']} {exp['id']}: {exp.get('title', '')} ({len(exp['points'])} points x "
                      f"{seeds} seeds)", flush=True)
                sweep = experiment_sweep(exp, values, opts.full)
                run_points(sweep, exp["points"], list(range(seeds)), root / exp["id"], [],
                           in_process=opts.in_process, dry_run=opts.dry_run)
    if opts.dry_run:
        return out
    shown = opts.data_dir or "$LITLAB_DATA"  # the docs' commands follow the README's data rule, not this machine
    # The summary covers every shipped manifest, so running one report keeps the others' rows in it.
    shipped = opts.report != "all" and Path(manifests[0]["_path"]).parent == MANIFESTS
    everything = [load_manifest(p) for p in find_manifests("all")] if shipped else manifests
    # A report without runs here would overwrite its committed rows with "not run": leave the summary alone then.
    missing = [m["report"] for m in everything if not (out / m["report"]).is_dir()]
    if missing and (Path(opts.docs) / "reproduction.md").is_file():
        ran = [m for m in everything if m["report"] not in missing]
        if ran:
            write_docs(ran, out, Path(opts.docs), data_dir=shown, full=opts.full, summary_too=False)
        pages = ", ".join(f"reproduction/{m['report']}.md" for m in ran) or "no page"
        print(f"Wrote {pages} in {opts.docs}; left reproduction.md and .csv as they were: report(s) "
              f"{', '.join(missing)} have no runs under {out}/ (`litlab reproduce all --table-only` once they do).")
        return Path(opts.docs) / "reproduction.md"
    docs = write_docs(everything, out, Path(opts.docs), data_dir=shown, full=opts.full)
    print(f"Wrote {docs}")
    return docs
