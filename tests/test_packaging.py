"""pyproject declares every package litlab imports; an installed (non-editable) litlab runs the README's
commands from another directory."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest

from conftest import REPO

PACKAGES = ("cli.py", "cli_messages.py", "lit_models", "datamodules", "callbacks", "experiments", "runtime")


def imported_top_level_modules() -> set[str]:
    files = [REPO / p for p in PACKAGES if p.endswith(".py")]
    files += [f for p in PACKAGES if not p.endswith(".py") for f in (REPO / p).rglob("*.py")]
    names = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", *(p.removesuffix(".py") for p in PACKAGES)}


def test_every_imported_package_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[; ]", d)[0].lower().replace("_", "-")
                for d in [*project["dependencies"], *(x for extra in project["optional-dependencies"].values()
                                                      for x in extra)]}
    dists = packages_distributions()
    missing = {}
    for module in sorted(imported_top_level_modules()):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_installed_litlab_runs_the_readme_commands_from_another_directory(tmp_path):
    # From a copy of the sources: setuptools builds in the source tree (build/, *.egg-info), not in the checkout.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "runs", "build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(source)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy, not the checkout
    run = subprocess.run([sys.executable, "-c", "import sys, cli; sys.argv[0] = 'litlab'; cli.main()", "fit",
                          "--config", "configs/base.yaml", "--config", "configs/quickstart.yaml",
                          "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((elsewhere / "runs" / "quickstart" / "version_0" / "results.json").read_text())
    assert results["status"] == "finished" and results["test/acc"] > 0.7
    config = (elsewhere / "runs" / "quickstart" / "version_0" / "config.yaml").read_text()
    assert str(target) in config  # the installed package's subset and code were used
