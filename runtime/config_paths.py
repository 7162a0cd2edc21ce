"""`--config configs/x.yaml` found from any directory: in the working directory, else beside litlab's code.

A checkout keeps `configs/` at the repository root, next to `cli.py`; a `pip install .` ships the same folder
next to the installed `cli.py`. So the README's commands work from a checkout's root, from anywhere with the
checkout's path, or from any directory once litlab is installed.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository (or site-packages): where cli.py and configs/ live


def resolve_configs(args: list[str]) -> list[str]:
    """`--config configs/x.yaml` (or `--config=...`) relative to ROOT when it is not in the working directory."""
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a == "--config" and not Path(out[i + 1]).exists() and (ROOT / out[i + 1]).exists():
            out[i + 1] = str(ROOT / out[i + 1])
    for i, a in enumerate(out):  # a swept config file: `--config=configs/x.yaml` (W&B's formatting)
        path = a.removeprefix("--config=")
        if a.startswith("--config=") and not Path(path).exists() and (ROOT / path).exists():
            out[i] = f"--config={ROOT / path}"
    return out
