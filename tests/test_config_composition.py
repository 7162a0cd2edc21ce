"""Stacking configs keeps every callback: each experiment config under configs/ composed with each overlay.

Parser only (no model, data or trainer is built), so the whole grid is cheap. An overlay is a config meant to be
added to an experiment (configs/analysis.yaml, gpu, ddp, quickstart, configs/weighting/*, a user's own file).
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentError

from cli import LitlabCLI, cli_main, unique_callbacks
from helpers import BASE, REPO

CONFIGS = REPO / "configs"
OVERLAYS = [CONFIGS / f"{name}.yaml" for name in ("analysis", "gpu", "ddp", "quickstart")] + sorted(
    (CONFIGS / "weighting").glob("*.yaml"))
MANIFESTS = {p for p in (CONFIGS / "reproduce").glob("*.yaml")}  # `litlab reproduce` manifests, not run configs
EXPERIMENTS = sorted(p for p in CONFIGS.rglob("*.yaml")
                     if p not in {*OVERLAYS, *MANIFESTS, CONFIGS / "base.yaml"} and "sweeps" not in p.parts)
# Swept deltas read after the recipe they change (configs/reproduce/001.yaml lists them that way).
PARENT = {CONFIGS / "reproduce" / "001" / f"gallery_{which}.yaml": CONFIGS / "reproduce" / "001" / "transfer.yaml"
          for which in ("best", "worst")}
PARENT[CONFIGS / "fast_cnn_cifar10_gpu.yaml"] = CONFIGS / "fast_cnn_cifar10.yaml"  # the GPU scale-up of that recipe
USER_OVERLAY = "trainer:\n  callbacks+:\n    - class_path: helpers.faults.KillAtStep\n      init_args: {step: 7}\n"


def flat(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are leaves. A YAML key `callbacks+` names the list `callbacks`."""
    out = {}
    for key, value in tree.items():
        key = prefix + key.removesuffix("+")
        out.update(flat(value, key + ".") if isinstance(value, dict) and value else {key: value})
    return out


def owned_by(overlay_keys: set[str], key: str) -> bool:
    """The overlay sets this key itself, or swaps the class it belongs to (quickstart's data.class_path)."""
    return key in overlay_keys or any(o.endswith(".class_path") and key.startswith(o[: -len("class_path")])
                                      for o in overlay_keys)


@pytest.fixture(scope="module")
def parser():
    """LitlabCLI's parser, built once; nothing instantiated."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LitlabCLI, "before_instantiate_classes", lambda self: None)
        mp.setattr(LitlabCLI, "instantiate_classes", lambda self: None)
        mp.setattr(sys, "argv", ["litlab"])  # pytest's own arguments are not the CLI's
        parser = cli_main([*BASE], run=False).parser
    parser.exit_on_error = False  # an ArgumentError to inspect, not usage text and SystemExit
    return parser


def parse(parser, *configs: Path) -> dict:
    cfg = parser.parse_args([*BASE, *(a for c in configs for a in ("--config", str(c)))])
    cfg.trainer.callbacks = unique_callbacks(cfg.trainer.callbacks)  # what LitlabCLI does before instantiating
    return cfg.as_dict()


@cache
def keys_of(config: Path) -> frozenset[str]:
    return frozenset(flat(yaml.safe_load(config.read_text()) or {}))


def overlay_callbacks(parser, overlay: Path) -> list:
    if overlay not in _OVERLAY_CALLBACKS:
        _OVERLAY_CALLBACKS[overlay] = parse(parser, overlay)["trainer"]["callbacks"] or []
    return _OVERLAY_CALLBACKS[overlay]


_OVERLAY_CALLBACKS: dict[Path, list] = {}


def names(callbacks: list | None) -> list[str]:
    return [c["class_path"] for c in callbacks or []]


def test_the_grid_is_complete():
    # A new overlay or experiment config joins the grid by being in configs/; guard against an empty glob.
    assert len(EXPERIMENTS) > 40 and len(OVERLAYS) == 13
    assert CONFIGS / "probe_mnist.yaml" in EXPERIMENTS and CONFIGS / "reproduce" / "002" / "probe.yaml" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_overlay_keeps_the_experiments_callbacks_and_values(parser, experiment: Path, tmp_path: Path):
    user = tmp_path / "mine.yaml"
    user.write_text(USER_OVERLAY)
    recipe = [PARENT[experiment], experiment] if experiment in PARENT else [experiment]
    alone = parse(parser, *recipe)
    alone_flat = flat(alone)
    for overlay in [*OVERLAYS, user]:
        try:
            composed = parse(parser, *recipe, overlay)
        except ArgumentError as err:
            # A weighting overlay on a model without `weighting` (the triplet encoder, the scratch nets): refused,
            # naming the overlay's key that does not apply -- never a silently dropped part.
            leaves = {k.rsplit(".", 1)[-1] for k in keys_of(overlay)}
            assert any(leaf in str(err) for leaf in leaves), f"{overlay.name} on {experiment.name}: {err}"
            continue
        want = names(unique_callbacks([*(alone["trainer"]["callbacks"] or []), *overlay_callbacks(parser, overlay)]))
        got = names(composed["trainer"]["callbacks"])
        assert got == want, f"{experiment.name} + {overlay.name}: callbacks {got}, expected the union {want}"
        composed_flat = flat(composed)
        for key in keys_of(experiment):
            if key != "trainer.callbacks" and key in alone_flat and not owned_by(keys_of(overlay), key):
                assert composed_flat.get(key) == alone_flat[key], (
                    f"{experiment.name} + {overlay.name}: {key} = {composed_flat.get(key)!r}, the experiment "
                    f"sets {alone_flat[key]!r}")


def test_probe_with_analysis_keeps_the_probe(parser):
    """The issue's case: a linear probe plus the analysis overlay still freezes the encoder."""
    composed = parse(parser, CONFIGS / "probe_mnist.yaml", CONFIGS / "analysis.yaml")
    callbacks = composed["trainer"]["callbacks"]
    assert callbacks[0]["class_path"] == "callbacks.EncoderFinetuning"
    assert callbacks[0]["init_args"]["mode"] == "linear_probe"
    analysis = names(yaml.safe_load((CONFIGS / "analysis.yaml").read_text())["trainer"]["callbacks+"])
    assert names(callbacks[1:]) == analysis
    # Overlay first: the same set, the overlay's callbacks first.
    reverse = parse(parser, CONFIGS / "analysis.yaml", CONFIGS / "probe_mnist.yaml")["trainer"]["callbacks"]
    assert names(reverse) == [*analysis, "callbacks.EncoderFinetuning"]


def test_identical_entries_run_once_and_a_plain_list_replaces(parser, tmp_path: Path):
    twice = parse(parser, CONFIGS / "analysis.yaml", CONFIGS / "analysis.yaml")
    assert names(twice["trainer"]["callbacks"]) == names(parse(parser, CONFIGS / "analysis.yaml")["trainer"]["callbacks"])
    replace = tmp_path / "replace.yaml"
    replace.write_text("trainer:\n  callbacks:\n    - class_path: callbacks.LearningCurves\n")
    replaced = parse(parser, CONFIGS / "probe_mnist.yaml", CONFIGS / "analysis.yaml", replace)
    assert names(replaced["trainer"]["callbacks"]) == ["callbacks.LearningCurves"]
