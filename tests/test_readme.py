"""Every `litlab ...` command in the README's ```bash blocks runs as written, from a fresh folder, with a tiny
budget appended — so a README command that stops working fails CI.

Commands are found generically (any block, any section: new sections are covered without editing this file).
Each block runs in order in one fresh folder holding only `configs/` (later commands use what earlier ones
made, as a reader following the README would); shell variables assigned in a block (`E="..."`, `CK=...`) and
`\\` continuations are honoured. Data: `$LITLAB_DATA` points at a tiny synthetic MNIST (the README's data rule),
the user cache at an empty folder, so nothing is downloaded. Commands run in-process (`cli.main`), which
skips the ~5 s start-up of a `litlab` process per command.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_mnist_dir

README = REPO / "README.md"

# Commands a test cannot run, matched by a substring of the command as the README writes it, each with why.
# Keep it short: a command listed here is one the README promises without proof.
SKIP: dict[str, str] = {
    # e.g. "--config configs/ddp.yaml --trainer.devices 4": "needs 4 GPUs",
    "--data.predict_path my_digits/": "needs your own images (tests/test_predict.py runs it on drawn digits)",
    "--format onnx": "needs the onnx extra (tests/test_export.py runs it where onnx is installed)",
}

# The tiny budget appended per subcommand. LightningCLI's: one epoch of two batches (max_steps caps configs
# that train by steps; val_check_interval 1.0 overrides step-based validation that two batches never reach).
TRAIN = ["--trainer.max_epochs", "1", "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1", "--trainer.val_check_interval",
         "1.0", "--data.val_size", "100"]
BUDGET = {"fit": TRAIN, "validate": TRAIN, "test": TRAIN, "predict": TRAIN}
# litlab's own commands: a sweep runs two points of one seed in this process; a reproduction only prints its
# runs and writes its tables into the temporary folder (never the repository's docs/).
BEFORE_DASHES = {"sweep": ["--seeds", "1", "--count", "2", "--in-process"]}
AFTER_DASHES = {"sweep": TRAIN}
BUDGET["reproduce"] = ["--dry-run", "--docs", "docs"]  # relative: the temporary folder's docs/


def blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line number, logical lines) of each ```bash block, `\\` continuations joined."""
    out: list[tuple[int, list[str]]] = []
    lines: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if lines is None:
            if line.strip().startswith("```bash"):
                lines, start, pending = [], number, ""
        elif line.strip().startswith("```"):
            out.append((start, [ln for ln in lines if ln.strip()]))
            lines = None
        elif line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            lines.append(pending + line)
            pending = ""
    return out


def readme_commands() -> list[tuple[str, list[tuple[str, list[str], dict[str, str]]]]]:
    """Per block: its id and its litlab commands as (as written, argv after `litlab`, environment prefix)."""
    found = []
    for number, lines in blocks(README.read_text()):
        variables: dict[str, str] = {}
        commands = []
        for line in lines:
            for segment in line.split("&&"):
                expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), segment)
                words = shlex.split(expanded, comments=True)
                env = {}
                while words and re.fullmatch(r"\w+=.*", words[0]):
                    key, value = words.pop(0).split("=", 1)
                    env[key] = value
                if not words:
                    variables.update(env)  # `E="..."`: a shell variable for the lines below
                elif Path(words[0]).name == "litlab":
                    commands.append((segment.split("#")[0].strip(), words[1:], env))
        if commands:
            found.append((f"README.md:{number}", commands))
    return found


def with_budget(argv: list[str]) -> list[str]:
    if not argv or any(a in ("--help", "-h") or a.endswith(".help") for a in argv):
        return argv  # a help command prints and exits: nothing to budget
    sub = argv[0]
    if sub in BEFORE_DASHES:
        cut = argv.index("--") if "--" in argv else len(argv)
        return [*argv[:cut], *BEFORE_DASHES.get(sub, []), "--", *argv[cut + 1:], *AFTER_DASHES.get(sub, [])]
    return [*argv, *BUDGET.get(sub, [])]


def run_litlab(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`litlab <argv>` in this process; fails the test on a non-zero exit."""
    import cli

    with monkeypatch.context() as m:
        for key, value in env.items():
            m.setenv(key, value)
        try:
            cli.main(argv)
        except SystemExit as stop:
            if stop.code not in (0, None):
                pytest.fail(f"`litlab {shlex.join(argv)}` exited with {stop.code!r}")


COMMANDS = readme_commands()


def test_the_readme_has_litlab_commands():
    # The parser must keep finding them: the quickstart, a test, a sweep and a report at least.
    written = [w for _, cmds in COMMANDS for w, _, _ in cmds]
    assert any("configs/quickstart.yaml" in w and " fit " in f" {w} " for w in written)
    assert any(w.startswith(s) for w in written for s in ("litlab test", "litlab sweep", "litlab report"))
    assert len(written) >= 20, written


@pytest.mark.timeout(900)
@pytest.mark.parametrize("block, commands", COMMANDS, ids=[b for b, _ in COMMANDS])
def test_readme_block_runs(block, commands, tmp_path, monkeypatch):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    data = make_mnist_dir(tmp_path / "data", n_train=600, n_test=100)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LITLAB_DATA", str(data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the rule's fallback: empty, never written
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "runs"))
    try:
        run_block(commands, monkeypatch)
    finally:
        import wandb

        if wandb.run is not None:  # the W&B example's offline run, left open by Lightning: close it for later tests
            wandb.finish()
    assert not (tmp_path / "cache" / "litlab").exists()  # $LITLAB_DATA was used, nothing downloaded to the cache
    assert os.listdir(data) == ["MNIST"]  # and the data folder was only read


def run_block(commands: list[tuple[str, list[str], dict[str, str]]], monkeypatch: pytest.MonkeyPatch) -> None:
    for written, argv, env in commands:
        reason = next((why for key, why in SKIP.items() if key in written), None)
        if reason:
            print(f"skipped ({reason}): {written}")
            continue
        argv = with_budget(argv)
        with contextlib.redirect_stdout(sys.stderr):  # keep the log readable when a command fails
            run_litlab(argv, env, monkeypatch)
