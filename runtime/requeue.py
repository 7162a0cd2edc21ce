"""A SLURM job requeued mid-run resumes into the same run directory.

On SLURM, Lightning's auto-requeue saves `hpc_ckpt_<n>.ckpt` in `trainer.default_root_dir` when the job gets
its warning signal (`#SBATCH --signal=SIGUSR1@90`), runs `scontrol requeue`, and the requeued job (same job
id, same command) would restore that checkpoint by itself — into a new `version_<n>` directory, leaving the
run's metrics and `results.json` split in two. The CLI instead calls `resume_requeued` for `fit` without a
`ckpt_path`: under SLURM, the newest hpc checkpoint becomes the `ckpt_path`, and the first logger's version
becomes the run directory the checkpoint was saved from (its checkpoint callback's `dirpath` is
`<run dir>/checkpoints`). From there the usual resume keeps one metrics.csv (runtime/resume.py).
`scripts/slurm_fit.sbatch` points `default_root_dir` at a folder per job id, so jobs never share these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

from runtime.resume import experiment_root


def hpc_checkpoints(folder: Path) -> list[Path]:
    """`hpc_ckpt_<n>.ckpt` files in `folder`, oldest (lowest n) first."""
    found = [p for p in folder.glob("hpc_ckpt_*.ckpt") if p.stem.rsplit("_", 1)[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.stem.rsplit("_", 1)[-1]))


def resume_requeued(cfg: Any) -> Path | None:
    """Under SLURM, point `cfg` (a fit config without ckpt_path) at the newest hpc checkpoint and its run dir."""
    if not SLURMEnvironment.detect():
        return None
    found = hpc_checkpoints(Path(cfg.trainer.default_root_dir or "."))
    if not found:
        return None
    ckpt = found[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    dirpaths = [s["dirpath"] for s in state.get("callbacks", {}).values() if isinstance(s, dict) and s.get("dirpath")]
    cfg.ckpt_path = str(ckpt)
    logger = cfg.trainer.logger[0] if isinstance(cfg.trainer.logger, list) else cfg.trainer.logger
    init = getattr(logger, "init_args", None)
    if dirpaths and init is not None and "version" in init and init.version is None:
        run = Path(dirpaths[0]).parent
        if run.parent.resolve() == experiment_root(cfg).resolve():
            init.version = int(run.name[8:]) if run.name.startswith("version_") and run.name[8:].isdigit() else run.name
    return ckpt


def requeued(trainer: L.Trainer, since: float) -> bool:
    """Whether Lightning saved an hpc checkpoint (the SLURM requeue signal) since `since` (time.time())."""
    folder = Path(trainer.default_root_dir)
    return any(p.stat().st_mtime >= since for p in hpc_checkpoints(folder))
