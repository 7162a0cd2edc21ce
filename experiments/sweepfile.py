"""W&B sweep files: load one, expand its points (grid / seeded random), and build the agent's command line.

A sweep file is W&B's own format (https://docs.wandb.ai/guides/sweeps/define-sweep-configuration): `program`,
`method`, `metric`, `parameters` keyed by LightningCLI dotted keys, and a `command` template with macros.
The command line for a point is built with wandb's own functions (`create_sweep_command_args` for `${args}`,
`create_sweep_command` for `${envvar:X}`), and the macro substitution loop below copies
`wandb.wandb_agent.Agent._command_run` (it is inline there, not a function), so what `litlab sweep` and the
tests run is what `wandb agent` runs.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from pathlib import Path
from typing import Any

import yaml

from wandb.sdk.launch.sweeps.utils import DEFAULT_SWEEP_COMMAND, create_sweep_command, create_sweep_command_args

METHODS = ("grid", "random", "bayes")
# Macros `wandb agent` fills in (wandb_agent.py): everything of create_sweep_command_args plus these three.
AGENT_MACROS = {"env": ["/usr/bin/env"], "interpreter": ["python"]}
SEED_KEYS = ("seed_everything",)


class SweepError(ValueError):
    """A sweep file litlab cannot run; the message says what is wrong and how to fix it."""


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read and check a sweep file: a mapping with `parameters` (flat dotted keys) and a known `method`."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"Sweep file {path} not found; give a W&B sweep YAML such as configs/sweeps/mlp_layers.yaml.")
    try:
        sweep = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise SweepError(f"{path} is not valid YAML{at} ({getattr(err, 'problem', None) or type(err).__name__}); "
                         "fix it, e.g. after configs/sweeps/mlp_layers.yaml.") from None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("parameters"), dict) or not sweep["parameters"]:
        raise SweepError(f"{path}: a sweep file needs a `parameters:` mapping (LightningCLI dotted key → values).")
    method = sweep.get("method", "grid")
    if method not in METHODS:
        raise SweepError(f"{path}: method {method!r} is not one of {METHODS}.")
    for key, spec in sweep["parameters"].items():
        if not isinstance(spec, dict):
            raise SweepError(f"{path}: parameter {key!r} must be a mapping such as `values: [...]` or `value: x`.")
        if "values" in spec and not (isinstance(spec["values"], list) and spec["values"]):
            raise SweepError(f"{path}: parameter {key!r} needs `values:` as a non-empty list, got {spec['values']!r}.")
        if "parameters" in spec:
            raise SweepError(f"{path}: nested parameters ({key!r}) are not supported; use dotted keys "
                             f"such as `model.init_args.lr`.")
    command = sweep.get("command", DEFAULT_SWEEP_COMMAND)
    if not any(str(c) in ("${args}", "${args_no_equals}") for c in command):
        raise SweepError(f"{path}: `command` must contain ${{args}} (or ${{args_no_equals}}) where the point's "
                         f"--key=value flags go.")
    sweep["method"] = method
    sweep["_path"] = str(path)
    return sweep


def _grid_values(key: str, spec: dict[str, Any]) -> list[Any]:
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    raise SweepError(f"Grid search needs `values` or `value` for {key!r} (it has {sorted(spec)}); "
                     f"use method: random for distributions.")


def _sample(key: str, spec: dict[str, Any], rng: random.Random) -> Any:
    """One draw from a parameter spec: W&B's `values` (with optional `probabilities`) and common distributions."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choices(spec["values"], weights=spec.get("probabilities"))[0]
    dist = spec.get("distribution") or ("int_uniform" if isinstance(spec.get("min"), int)
                                        and isinstance(spec.get("max"), int) else "uniform")
    lo, hi = spec.get("min"), spec.get("max")
    if dist == "uniform":
        return rng.uniform(float(lo), float(hi))
    if dist == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if dist == "log_uniform_values":
        return math.exp(rng.uniform(math.log(float(lo)), math.log(float(hi))))
    if dist == "log_uniform":  # W&B: min/max are natural logs
        return math.exp(rng.uniform(float(lo), float(hi)))
    if dist == "normal":
        return rng.gauss(float(spec.get("mu", 0.0)), float(spec.get("sigma", 1.0)))
    raise SweepError(f"Parameter {key!r}: distribution {dist!r} is not supported offline "
                     f"(use values, uniform, int_uniform, log_uniform_values, log_uniform or normal).")


def expand(sweep: dict[str, Any], count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The sweep's points as {dotted key: value}: the whole grid (cut to `count`), or `count` seeded random draws.

    `bayes` points depend on the results of earlier ones, so they cannot be listed up front: `litlab sweep` asks
    Optuna for them one at a time (experiments/bayes.py).
    """
    params = sweep["parameters"]
    if sweep["method"] == "bayes":
        raise SweepError("method: bayes chooses each point from earlier results; there is no list of points "
                         "to expand (litlab sweep runs it with Optuna's TPE, --count N trials).")
    if sweep["method"] == "grid":
        keys = list(params)
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(_grid_values(k, params[k]) for k in keys))]
        return points[:count] if count else points
    if not count:
        raise SweepError(f"method: {sweep['method']} draws points at random: say how many with --count N.")
    rng = random.Random(seed)
    return [{k: _sample(k, spec, rng) for k, spec in params.items()} for _ in range(count)]


def agent_command(sweep: dict[str, Any], point: dict[str, Any]) -> list[str]:
    """The exact command line `wandb agent` runs for `point` (macro loop copied from wandb_agent.py)."""
    sweep_command = create_sweep_command(list(sweep.get("command", DEFAULT_SWEEP_COMMAND)))
    sweep_vars = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    sweep_vars.update(AGENT_MACROS, program=[sweep.get("program", "")])
    command_list: list[str] = []
    for c in sweep_command:
        c = str(c)
        if c.startswith("${") and c.endswith("}"):
            command_list += sweep_vars.get(c[2:-1]) or []
        else:
            command_list += [c]
    return command_list


def litlab_args(sweep: dict[str, Any], point: dict[str, Any]) -> list[str]:
    """The arguments after the program in the agent's command (`fit --config ... --key=value ...`)."""
    template = [str(c) for c in sweep.get("command", DEFAULT_SWEEP_COMMAND)]
    starts = [i for i, c in enumerate(template)
              if c == "${program}" or Path(c).name in ("litlab", "cli.py") or c in ("-m", "cli")]
    if not starts:
        raise SweepError(f"{sweep.get('_path', 'sweep')}: `command` must call litlab: ${{program}} with "
                         f"program: cli.py, or the `litlab` command.")
    rest = {**sweep, "command": template[max(starts) + 1:]}
    return agent_command(rest, point)


def short_key(key: str) -> str:
    """`model.init_args.net.init_args.hidden` → `hidden` (the last part names it well enough in tables)."""
    return key.rsplit(".", 1)[-1]


def point_name(index: int, point: dict[str, Any]) -> str:
    """A stable, filesystem-safe folder name: `p03_hidden-512-256_lr-0.01`."""
    parts = [f"{short_key(k)}-{v}" for k, v in point.items() if k not in SEED_KEYS]
    slug = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(parts).replace(" ", ""))).strip("-")
    return f"p{index:02d}" + (f"_{slug[:80]}" if slug else "")
