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

from datamodules.location import default_data_dir
from experiments.manifest import MANIFESTS, ManifestError, experiment_sweep, find_manifests, load_manifest
from experiments.reproduction import write_docs
from experiments.sweep import ROOT, run_points


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
