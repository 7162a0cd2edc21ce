"""Shared test helpers; also loaded into CLI subprocesses (`--trainer.callbacks+=helpers.<name>`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE = ["--config", str(REPO / "configs" / "base.yaml")]  # every CLI test starts from the shared defaults
