"""Issue 17's defects, each reproduced: a failed resume keeps its run, `--ckpt_path last|best` mean the same in
every subcommand, a resume cannot silently change the model, altered checkpoints and foreign class paths are
refused before use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runtime.files import write_json_atomic
from runtime.checkpoint_io import AtomicCheckpointIO
from cli import cli_main
from conftest import REPO
from helpers import FIT, tree_hash


def litlab_error(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    message = str(stop.value.code)
    assert message.startswith("litlab: ") and "\n" not in message, message
    return message


@pytest.fixture
def finished_run(mnist_dir) -> tuple[list[str], Path]:
    """A finished, tested one-epoch run: its fit arguments and its run directory."""
    argv = [*FIT, "--data.data_dir", str(mnist_dir)]
    cli = cli_main(["fit", *argv])
    run = Path(cli.trainer.log_dir)
    assert json.loads((run / "results.json").read_text())["status"] == "finished"
    return argv, run


def test_a_failed_resume_leaves_the_finished_run_exactly_as_it_was(finished_run):
    argv, run = finished_run
    before = tree_hash(run.parent)
    # The reproduction: another architecture (caught before anything is written) ...
    message = litlab_error(["fit", *argv, "--ckpt_path", "last", "--model.net.hidden", "[32]"])
    assert "changes its model (model.net.hidden: checkpoint [16], this command [32])" in message
    assert tree_hash(run.parent) == before
    # ... and a resume that fails after it has started writing (config.yaml, metrics.csv, results.json,
    # checkpoints of two more epochs): a bug in a callback two epochs later.
    with pytest.raises(RuntimeError, match="a bug in a callback"):
        cli_main(["fit", *argv, "--ckpt_path", "last", "--trainer.max_epochs", "4",
                  "--trainer.callbacks+=helpers.faults.RaiseAtStep", "--trainer.callbacks.step", "20",
                  "--trainer.callbacks.what", "bug"])
    assert tree_hash(run.parent) == before  # every file, byte for byte, and no copy left beside it
    # A resume that succeeds writes into the run and leaves nothing beside it.
    cli_main(["fit", *argv, "--ckpt_path", "last", "--trainer.max_epochs", "2"])
    assert json.loads((run / "results.json").read_text())["epochs"] == 2
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]


@pytest.mark.parametrize("which", ["last", "best"])
def test_ckpt_path_last_and_best_name_the_same_checkpoint_in_every_subcommand(finished_run, which):
    argv, run = finished_run
    state = json.loads((run / "results.json").read_text())
    expected = run / "checkpoints" / f"{which}.ckpt"
    weights = torch.load(expected, weights_only=True)["state_dict"]
    for command in ("validate", "predict", "test"):  # before: `last` evaluated an untrained model
        cli = cli_main([command, *argv, "--ckpt_path", which])
        assert cli.config[command].ckpt_path == str(expected)
        for name, tensor in cli.model.state_dict().items():  # the weights evaluated are the checkpoint's
            assert torch.equal(tensor, weights[name]), (command, name)
    tested = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    assert tested["status"] == "tested" and tested["checkpoint"] == str(expected)
    if which == "best":  # the fit tested its best checkpoint too: the same number
        assert tested["test/acc"] == state["test/acc"]


def test_resuming_with_another_learning_rate_is_refused_and_testing_says_which_lr_it_used(finished_run):
    argv, run = finished_run
    before = tree_hash(run)
    last = str(run / "checkpoints" / "last.ckpt")
    for ckpt in ("last", last):  # before: `last` trained with the old lr; a path silently dropped the new one
        message = litlab_error(["fit", *argv, "--ckpt_path", ckpt, "--model.lr", "0.01"])
        assert f"--ckpt_path {last} resumes a run as it was configured" in message
        assert "model.lr: checkpoint 0.1, this command 0.01" in message and "start a new run" in message
    assert tree_hash(run) == before
    with pytest.warns(UserWarning, match="test uses the model saved in .*model.lr: checkpoint 0.1, this command 0.01"):
        cli = cli_main(["test", *argv, "--ckpt_path", last, "--model.lr", "0.01"])
    assert cli.model.hparams.lr == 0.1 and "lr: 0.1" in (Path(cli.trainer.log_dir) / "config.yaml").read_text()


def test_a_checkpoint_altered_in_place_is_refused(finished_run, tmp_path):
    argv, run = finished_run
    raw = bytearray((run / "checkpoints" / "best.ckpt").read_bytes())
    raw[len(raw) // 2] ^= 0x10  # one flipped bit in the middle of a tensor: still a valid-looking zip
    rotten = tmp_path / "rotten.ckpt"
    rotten.write_bytes(bytes(raw))
    for command in ("test", "fit"):
        message = litlab_error([command, *argv, "--ckpt_path", str(rotten)])
        assert f"{rotten} is corrupt: archive/data/" in message and "does not match the checksum" in message
        assert "copy it again" in message


@pytest.mark.parametrize("where", ["_class_path", "net"])
def test_a_checkpoint_cannot_make_litlab_import_a_module(finished_run, tmp_path, monkeypatch, where):
    argv, run = finished_run
    (tmp_path / "planted.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # a module an attacker managed to put on the path
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    if where == "net":
        ckpt["hyper_parameters"]["net"]["class_path"] = "planted.Net"
    else:
        ckpt["hyper_parameters"]["_class_path"] = "planted.Net"
    planted = tmp_path / "planted.ckpt"
    torch.save(ckpt, planted)
    message = litlab_error(["test", *argv, "--ckpt_path", str(planted)])
    assert "names the class 'planted.Net'" in message and "not one of litlab's" in message
    assert not (tmp_path / "imported").exists() and "planted" not in sys.modules


# -- item 9: SIGTERM's exit code, strict JSON, no temporary left for good -------------------------------------
@pytest.mark.timeout(600)  # a CLI subprocess
@pytest.mark.slow
def test_sigterm_stops_the_run_with_a_non_zero_exit_and_records_it(mnist_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cli", "fit", *FIT, "--data.data_dir", str(mnist_dir),
                           "--trainer.max_epochs", "3", "--trainer.callbacks+=helpers.faults.TermAtStep",
                           "--trainer.callbacks.step", "10"], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 143, proc.stderr[-2000:]  # 128 + SIGTERM, as a shell reports it (it was 0)
    assert [line for line in proc.stderr.splitlines() if line.startswith("litlab")] == [
        "litlab: stopped by SIGTERM; the run is recorded as interrupted. Continue it with --ckpt_path last."]
    results = json.loads((tmp_path / "runs" / "default" / "version_0" / "results.json").read_text())
    assert results["status"] == "interrupted" and results["global_step"] == 10


def test_results_json_is_strict_json_when_a_metric_is_nan(tmp_path):
    path = write_json_atomic(tmp_path / "results.json", {"status": "diverged", "train/loss": float("nan"),
                                                         "val/loss": float("inf"), "val/acc": 0.25})
    strict = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in results.json"))
    assert strict == {"status": "diverged", "train/loss": None, "val/loss": None, "val/acc": 0.25}


def test_a_failed_write_and_a_killed_one_leave_no_temporary_for_good(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = folder / ".last.ckpt.999999999.tmp"  # above Linux's pid_max (4194304): never a live process
    live = folder / f".best.ckpt.{os.getpid()}.tmp"  # a concurrent writer still at work: left alone
    dead.write_bytes(b"half of a killed write")
    live.write_bytes(b"being written")
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, folder / "last.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == [live.name, "last.ckpt"]

    write_bytes = Path.write_bytes

    def full_disk(self, data):  # the disk fills up after three bytes
        write_bytes(self, data[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(tmp_path / "results.json", {"status": "finished"})
    monkeypatch.undo()
    assert not list(tmp_path.glob(".results.json*"))
