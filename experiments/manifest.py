"""Reproduction manifests (`configs/reproduce/<id>.yaml`): loading and checking them, their grid points, and the
sweep that runs one experiment. `litlab reproduce` (experiments/reproduce.py) runs them; experiments/reproduction.py
writes the docs from their runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from experiments.sweep import ROOT
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
