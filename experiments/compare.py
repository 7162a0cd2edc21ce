"""`litlab report RUN_DIR RUN_DIR ...` (or an experiment folder, `runs/<name>/`, holding version_*/): any runs side
by side — their final and best metrics, wall time and the config values that differ, and their learning curves
overlaid. Written as `comparison.html` (self-contained) and `comparison.md` into `--out`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import yaml

from runtime import run_record

# The columns of the comparison, in order: (results.json key, header).
COLUMNS = (("status", "status"), ("epochs", "epochs"), ("val/acc", "final val/acc"), ("val/acc_best", "best val/acc"),
           ("val/loss", "final val/loss"), ("test/acc", "test/acc"), ("test/loss", "test/loss"),
           ("fit_seconds", "wall time (s)"))
# Config keys that differ between any two runs without saying anything about the experiment.
IGNORED = ("ckpt_path", "trainer.logger.init_args.version")


def is_run(directory: Path) -> bool:
    return run_record.path(directory).is_file() or (directory / "metrics.csv").is_file()


def expand(directories: list[Path]) -> list[Path]:
    """Run directories: each one given, or the runs inside an experiment folder (`runs/<name>/version_*/`)."""
    runs: list[Path] = []
    for d in directories:
        if is_run(d):
            runs.append(d)
        elif inner := sorted((p for p in d.iterdir() if p.is_dir() and is_run(p)), key=_version_order):
            runs.extend(inner)
        else:
            raise SystemExit(f"litlab report: {d} is neither a run directory (results.json, metrics.csv), a sweep "
                             "directory (*/point.json) nor an experiment folder of runs (runs/<name>/version_*/); give "
                             "the folder `litlab fit` or `litlab sweep` wrote.")
    return runs


def _version_order(path: Path) -> tuple[int, str]:
    tail = path.name.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else -1, path.name)


def labels(runs: list[Path]) -> list[str]:
    """Short, unique names: `<experiment>/<version>` (the two last path parts)."""
    names = ["/".join(r.resolve().parts[-2:]) for r in runs]
    return [n if names.count(n) == 1 else str(r) for n, r in zip(names, runs)]


def flat_config(run: Path) -> dict[str, str]:
    """config.yaml as dotted keys -> YAML text of the value (lists kept whole)."""
    path = run / "config.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6)  # a scalar ends in "\n...\n"
            out[prefix] = text.strip().removesuffix("...").strip()

    walk("", data or {})
    return out


def differing(runs: list[Path]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per config key whose value is not the same in every run."""
    configs = [flat_config(r) for r in runs]
    keys = sorted({k for c in configs for k in c if not k.startswith(IGNORED)})
    rows = [[k, *(c.get(k, "–") for c in configs)] for k in keys if len({c.get(k, "–") for c in configs}) > 1]
    return ["config key", *labels(runs)], rows


def metrics_table(runs: list[Path]) -> tuple[list[str], list[list[str]]]:
    header = ["run", *(h for _, h in COLUMNS)]
    rows = []
    for label, run in zip(labels(runs), runs):
        results = run_record.read(run)
        cells = []
        for key, _ in COLUMNS:
            value = results.get(key, "–")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        rows.append([label, *cells])
    return header, rows


def build(runs: list[Path], out: Path) -> tuple[str, str]:
    """(html, markdown) of the comparison; the curves' PNG goes to `out/comparison_files/curves.png`."""
    from runtime.files import write_atomic
    from experiments.render import CSS, html_table, img_tag, plot_curves
    from experiments.table import markdown_table

    title = f"Comparison of {len(runs)} runs"
    metrics, config = metrics_table(runs), differing(runs)
    H = [f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>{CSS}</style></head><body>"
         f"<h1>{title}</h1>", "<h2>Results</h2>", html_table(*metrics)]
    M = [f"# {title}\n", "## Results\n", markdown_table(*metrics)]
    curves = plot_curves({label: [run] for label, run in zip(labels(runs), runs)})
    if curves:
        path = write_atomic(out / "comparison_files" / "curves.png", curves)
        H += ["<h2>Learning curves</h2>", img_tag(curves, "learning curves")]
        M += ["\n## Learning curves\n", f"![learning curves]({path.relative_to(out)})\n"]
    H += ["<h2>Config values that differ</h2>", html_table(*config) if config[1] else "<p>none</p>"]
    M += ["\n## Config values that differ\n", markdown_table(*config) if config[1] else "none\n"]
    H += ["<h2>Runs</h2><ul>", *(f"<li>{html.escape(str(r))}</li>" for r in runs), "</ul></body></html>"]
    M += ["\n## Runs\n", *(f"- `{r}`" for r in runs)]
    return "\n".join(H), "\n".join(M) + "\n"
