"""The layout's promises: no import cycles among litlab's modules, models and data import no plotting code."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from helpers import REPO

PACKAGES = ("cli", "cli_messages", "callbacks", "datamodules", "experiments", "lit_models", "runtime")


def module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at top level or inside a function (a lazy import is still a
    dependency). `from pkg import name` counts as importing `pkg.name` when that is a module, else `pkg`."""
    files = [REPO / "cli.py", REPO / "cli_messages.py", *(p for pkg in PACKAGES[2:] for p in (REPO / pkg).rglob("*.py"))]
    modules = {module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names}
        # a package's __init__ re-exporting its own modules is not a dependency of those modules on it
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert graph["cli"] and graph["experiments.sweep"], "the graph reads imports"  # guard: not vacuously empty
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.timeout(120)
def test_models_and_data_import_no_plotting_code():
    """Lightning itself imports matplotlib (through torchmetrics, when installed), so the promise is about litlab's
    own code: importing models and data modules loads none of the plotting/analysis stack and leaves
    matplotlib's backend alone (callbacks.analysis.figures sets Agg: importing it is the analysis callbacks' job)."""
    code = ("import sys, matplotlib, lit_models, datamodules\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('callbacks', 'experiments', 'sklearn', "
            "'captum', 'cli'))\n"
            "print(loaded, matplotlib.rcParams._get_backend_or_none())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=100,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "None"], out.stdout
