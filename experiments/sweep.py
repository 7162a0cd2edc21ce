"""`litlab sweep FILE`: run every point of a W&B sweep file × seeds offline, then tabulate mean ± std.

Each run is `litlab <the sweep command's arguments> --key=value ...` (the agent's own formatting, see
`sweepfile`) plus its seed and its run directory `<out>/<point>/seed<k>/`. Runs go one after another in child
processes by default: a crash, a leak or a hung DataLoader in one run cannot take the sweep down, and every run
starts from the same fresh state (seeds, W&B singletons, torch threads) as under `wandb agent`. `--in-process`
saves the ~5 s interpreter start-up per run (tests use it). A run counts as done when its `results.json` says
`finished`, `diverged` or `collapsed`; the others run again, so a crashed or interrupted sweep resumes where it
stopped. A child killed outright (SIGKILL, the OOM killer) leaves `running` behind: the runner records it as `killed`.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.bayes import distributions, require_optuna, run_bayes
from experiments.sweepfile import SEED_KEYS, SweepError, expand, litlab_args, load_sweep, point_name
from experiments.table import collect, write_tables
from runtime import run_record
from runtime.config_paths import ROOT, resolve_configs

DONE = ("finished", "diverged", "collapsed", "tested")  # tested: a `litlab test` run


def run_one(argv: list[str], log: Path, in_process: bool, env: dict[str, str]) -> int:
    """One run, as `python -m cli ARGV` with `env` (WANDB_MODE, WANDB_RUN_GROUP) added to its environment: a child
    process (Lightning's ddp launcher re-runs it per rank), or with --in-process this process running the same
    module (runpy: the runner never imports cli, so no import cycle)."""
    if in_process:
        saved_env, saved_argv = {k: os.environ.get(k) for k in env}, sys.argv
        os.environ.update(env)
        sys.argv = ["cli", *argv]
        try:
            runpy.run_module("cli", run_name="__main__", alter_sys=False)
            return 0
        except (Exception, SystemExit) as err:  # noqa: BLE001 — a failed run is recorded, the sweep goes on
            if isinstance(err, SystemExit) and err.code in (None, 0):
                return 0
            log.write_text(f"{type(err).__name__}: {err}\n")
            return 1
        finally:  # leave the caller's environment as it was
            sys.argv = saved_argv
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with log.open("w") as f:
        return subprocess.run([sys.executable, "-m", "cli", *argv], stdout=f, stderr=subprocess.STDOUT, env=env,
                              cwd=os.getcwd()).returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="litlab sweep",
        description="Run a W&B sweep file offline: every point (grid, or --count random draws) × seeds, one run "
                    "after another, skipping runs already finished; then write results.csv and results.md "
                    "(mean ± std over seeds per point, best point marked, wall time per run).",
        epilog="Arguments after `--` go to every run, e.g. `litlab sweep configs/sweeps/mlp_layers.yaml --seeds 3 "
               "-- --trainer.max_epochs 5`. Tables: `litlab report <out>`.")
    p.add_argument("file", help="W&B sweep YAML (configs/sweeps/*.yaml)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per point, 0..N-1, passed as --seed_everything and --data.init_args.seed "
                        "(default 1; not allowed when the file sweeps seed_everything itself)")
    p.add_argument("--count", type=int, default=None,
                   help="random: number of points; bayes: number of Optuna TPE trials in all; grid: first N points")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the random draws / of the TPE sampler")
    p.add_argument("--out", default=None, help="sweep directory (default runs/sweeps/<file name>)")
    p.add_argument("--in-process", action="store_true", help="run in this process (faster start, no isolation)")
    p.add_argument("--wandb", choices=("disabled", "offline", "online"), default="disabled",
                   help="WANDB_MODE of the runs: how W&B loggers in their configs log (default disabled: not at all)")
    p.add_argument("--dry-run", action="store_true", help="print each run's arguments and stop")
    return p


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[2:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    opts = build_parser().parse_args(argv)
    if not Path(opts.file).exists() and (ROOT / opts.file).is_file():  # litlab's own sweep files, from anywhere
        opts.file = str(ROOT / opts.file)
    try:
        sweep = load_sweep(opts.file)
        bayes = sweep["method"] == "bayes"
        if bayes:
            require_optuna()  # refuse before any run, never fall back to random
            distributions(sweep["parameters"])  # every parameter has a bounded prior
            if not opts.count or opts.dry_run:
                raise SweepError("method: bayes runs --count N trials, each chosen from the results before it "
                                 "(so there is no --dry-run list of points).")
        points = [] if bayes else expand(sweep, count=opts.count, seed=opts.sample_seed)
    except SweepError as err:
        raise SystemExit(f"litlab sweep: {err}") from None
    if any(k in sweep["parameters"] for k in SEED_KEYS):
        if opts.seeds is not None:
            raise SystemExit(f"litlab sweep: {opts.file} sweeps seed_everything itself; drop --seeds.")
        seeds: list[int | None] = [None]
    else:
        seeds = list(range(opts.seeds or 1))
    out = Path(opts.out or Path("runs") / "sweeps" / Path(opts.file).stem)
    if not opts.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.yaml").write_text(Path(opts.file).read_text())  # the report shows what was swept
    if bayes:
        statuses: list[str] = []
        try:
            run_bayes(sweep, opts.count, out, lambda point, number: statuses.extend(run_points(
                sweep, [point], seeds, out, extra, in_process=opts.in_process, wandb_mode=opts.wandb,
                first_index=number)), sample_seed=opts.sample_seed)
        except SweepError as err:
            raise SystemExit(f"litlab sweep: {err}") from None
    else:
        statuses = run_points(sweep, points, seeds, out, extra, in_process=opts.in_process, wandb_mode=opts.wandb,
                              dry_run=opts.dry_run)
    if statuses and not any(s in DONE for s in statuses):  # nothing to tabulate: a failure, not a result
        raise SystemExit(f"litlab sweep: all {len(statuses)} runs failed ({', '.join(sorted(set(statuses)))}); "
                         f"each run's console is in {out}/<point>/seed<k>.log.")
    if not opts.dry_run:
        print(f"Wrote {out / 'results.csv'} and {out / 'results.md'}; HTML report: litlab report {out}")
    return out


def run_points(sweep: dict[str, Any], points: list[dict[str, Any]], seeds: list[int | None], out: Path,
               extra: list[str], in_process: bool = False, wandb_mode: str = "disabled",
               dry_run: bool = False, first_index: int = 0) -> list[str]:
    """Run every point × seed into `out/<point>/seed<k>/` (skipping finished runs), then write the tables.
    Returns each run's status (none for a dry run).

    `{seed}` in the command or `extra` becomes the run's seed, e.g. the checkpoint of the same seed's run of an
    earlier sweep. Points are numbered from `first_index` (`p03_...`): a bayes trial's number.
    """
    # Points that differ only in a swept seed share a folder (and a row of the table): number the others.
    distinct: list[dict[str, Any]] = []
    for p in points:
        if (key := {k: v for k, v in p.items() if k not in SEED_KEYS}) not in distinct:
            distinct.append(key)
    runs = [(p, s) for p in points for s in seeds]
    statuses: list[str] = []
    for n, (point, seed) in enumerate(runs, 1):
        name = point_name(first_index + distinct.index({k: v for k, v in point.items() if k not in SEED_KEYS}), point)
        version = f"seed{seed}" if seed is not None else f"seed{point.get('seed_everything', 0)}"
        run = out / name / version
        args = resolve_configs(litlab_args(sweep, point))
        if seed is not None:
            args += [f"--seed_everything={seed}", f"--data.init_args.seed={seed}"]
        k = str(seed if seed is not None else point.get("seed_everything", 0))
        # The run directory goes last among the configs (an experiment config after `--` names its own logger),
        # but before a logger that `extra` appends (`--trainer.logger+=WandbLogger` and the options after it):
        # `--trainer.logger.init_args.*` sets the last logger, and the run would lose its directory to it.
        cut = next((i for i, a in enumerate(extra) if a.startswith("--trainer.logger+")), len(extra))
        args += [*extra[:cut], "--trainer.logger.init_args.save_dir", str(out),
                 "--trainer.logger.init_args.name", name, "--trainer.logger.init_args.version", version, *extra[cut:]]
        args = [a.replace("{seed}", k) for a in args]
        prefix = f"[{n}/{len(runs)}] {name} {version}"
        if dry_run:
            print(prefix, " ".join(args))
            continue
        status = run_record.status(run)
        if status in DONE:
            print(f"{prefix}: {status} already, skipped", flush=True)
            statuses.append(status)
            continue
        run.parent.mkdir(parents=True, exist_ok=True)
        (run.parent / "point.json").write_text(json.dumps(point, indent=1) + "\n")
        t0 = time.perf_counter()
        # A W&B run's group is its sweep point: the point's seeds side by side (runtime/wandb_run.py).
        group = {"WANDB_RUN_GROUP": f"{out.name}/{name}"}
        code = run_one(args, run.parent / f"{version}.log", in_process, {"WANDB_MODE": wandb_mode, **group})
        results = run_record.read(run)
        if results.get("status") == "running" and code < 0:  # killed outright (SIGKILL, OOM): not "running"
            results = run_record.mark_killed(run, -code)
        status = results.get("status", "missing")
        statuses.append(status)
        metric = sweep.get("metric", {}).get("name", "test/acc")
        value = results.get(metric)
        shown = f"{metric}={value:.4f}" if isinstance(value, (int, float)) else f"exit code {code}"
        print(f"{prefix}: {status} {shown} ({time.perf_counter() - t0:.1f} s)", flush=True)
    if not dry_run:
        write_tables(out, collect(out), sweep)
    return statuses
