"""`method: bayes` offline: Optuna's TPE chooses each point from the results of the points before it.

W&B's bayes search runs on W&B's server; offline, a random search in its place would be a different experiment
under the same name. So `litlab sweep` runs `bayes` with Optuna's Tree-structured Parzen Estimator (ask/tell):
each trial is one point, run with every seed; its value is the mean of the sweep's `metric` over those seeds,
told back to the study before the next point is chosen. The study lives in `<out>/optuna.db` (SQLite), so an
interrupted sweep resumes where it stopped: finished trials are kept, a trial cut short is marked failed and a
new one is asked for. Without Optuna installed, `bayes` is refused (never silently random).

W&B parameter specs map to Optuna distributions: `values` → categorical (by position, so lists such as hidden
sizes work), `uniform`, `int_uniform`, `log_uniform_values`, `log_uniform` (natural-log bounds) → bounded
float/int distributions; `value` stays fixed. `normal` has no bounds for TPE's prior and is refused.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.sweepfile import SweepError, point_name
from runtime import run_record


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SweepError("method: bayes needs Optuna to search offline (pip install \"litlab[bayes]\"): litlab never "
                         "runs it as a random search. Or use method: random, or run the file with "
                         "`wandb sweep` + `wandb agent` (W&B's own Bayesian search).") from None
    return optuna


def distributions(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Optuna distributions of the searched keys, fixed values of the others)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    searched, fixed = {}, {}
    for key, spec in params.items():
        if "value" in spec:
            fixed[key] = spec["value"]
            continue
        if "values" in spec:
            searched[key] = CategoricalDistribution(list(range(len(spec["values"]))))
            continue
        dist = spec.get("distribution") or ("int_uniform" if isinstance(spec.get("min"), int)
                                            and isinstance(spec.get("max"), int) else "uniform")
        lo, hi = spec.get("min"), spec.get("max")
        if lo is None or hi is None or dist not in ("uniform", "int_uniform", "log_uniform_values", "log_uniform"):
            raise SweepError(f"Parameter {key!r}: method: bayes needs `values` or a bounded distribution (uniform, "
                             f"int_uniform, log_uniform_values, log_uniform with min and max); got {spec}.")
        if dist == "int_uniform":
            searched[key] = IntDistribution(int(lo), int(hi))
        elif dist == "log_uniform":  # W&B: min/max are natural logs
            searched[key] = FloatDistribution(math.exp(float(lo)), math.exp(float(hi)), log=True)
        else:
            searched[key] = FloatDistribution(float(lo), float(hi), log=dist == "log_uniform_values")
    return searched, fixed


def point_of(params: dict[str, Any], trial_params: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """The sweep point of a trial, keys in the sweep file's order (categoricals back from positions to values)."""
    point = {}
    for key, spec in params.items():
        value = fixed[key] if key in fixed else trial_params[key]
        point[key] = spec["values"][value] if "values" in spec else value
    return point


def run_bayes(sweep: dict[str, Any], count: int, out: Path, run_point: Callable[[dict[str, Any], int], None],
              sample_seed: int = 0) -> None:
    """Run `count` TPE trials in total (those already in `<out>/optuna.db` count). `run_point(point, number)`
    runs one point with every seed into `out/<point_name(number, point)>/seed<k>/` (the runner's run_points)."""
    optuna = require_optuna()
    metric = sweep.get("metric") or {}
    if "name" not in metric:
        raise SweepError(f"{sweep.get('_path', 'sweep')}: method: bayes needs `metric: {{name: ..., goal: maximize}}`"
                         " (the value each point is judged by).")
    searched, fixed = distributions(sweep["parameters"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="litlab", storage=f"sqlite:///{(out / 'optuna.db').resolve()}", load_if_exists=True,
        direction="minimize" if metric.get("goal") == "minimize" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=sample_seed, n_startup_trials=min(10, max(count // 3, 1))))
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # cut short by a crash: ask again
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    for _ in range(max(count - done, 0)):
        trial = study.ask(searched)
        point = point_of(sweep["parameters"], trial.params, fixed)
        run_point(point, trial.number)
        runs = sorted((out / point_name(trial.number, point)).glob("seed*"))
        values = [run_record.read(run).get(metric["name"]) for run in runs]
        values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if values:
            study.tell(trial, statistics.fmean(values))
        else:  # every seed failed or diverged: TPE learns nothing from it
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
