"""Real-data checks (marked slow): train on the real MNIST in ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import cli_main
from helpers import BASE


@pytest.mark.slow
def test_mlp_128_64_reaches_96_percent_in_3_epochs(real_mnist):
    cli = cli_main(["fit", *BASE, "--data.data_dir", str(real_mnist),
                    "--data.download", "false", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false"])
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    assert results["test/acc"] >= 0.96, results
