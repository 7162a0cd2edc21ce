"""A table of bad inputs -- data files, checkpoints, arguments, sweep files, write failures -- each through the CLI
in its own process: a non-zero exit, exactly one `litlab` line, no traceback, and the finished run of the same
experiment unchanged, byte for byte."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cli import cli_main
from conftest import REPO, make_mnist_dir, synthetic_digits, write_idx
from helpers import FIT, tree_hash


def mnist_with(root: Path, split: str, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> Path:
    make_mnist_dir(root, n_train=600, n_test=200)
    raw = root / "MNIST" / "raw"
    if images is not None:
        write_idx(raw / f"{split}-images-idx3-ubyte.gz", images)
    if labels is not None:
        write_idx(raw / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def npz_with_a_lying_header(path: Path) -> Path:
    """An .npz whose train_images header promises 99 images and holds 10 (numpy: "buffer size does not match")."""
    np.savez(path, train_images=np.zeros((10, 28, 28), np.uint8), train_labels=np.zeros(10, np.int64),
             test_images=np.zeros((5, 28, 28), np.uint8), test_labels=np.zeros(5, np.int64))
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["train_images.npy"] = members["train_images.npy"].replace(b"(10, 28, 28)", b"(99, 28, 28)")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def bad_inputs(tmp: Path, data: Path, run: Path) -> dict[str, tuple[list[str], str, int | None]]:
    """name -> (arguments, a part of the expected message, file-size limit in bytes or None)."""
    labels = synthetic_digits(200, 1)[1]
    labels[7] = 12
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["net"]["class_path"] = "os.system"
    torch.save(ckpt, tmp / "planted.ckpt")
    raw = bytearray((run / "checkpoints" / "best.ckpt").read_bytes())
    (tmp / "torn.ckpt").write_bytes(bytes(raw[:4000]))
    raw[len(raw) // 2] ^= 1
    (tmp / "rotten.ckpt").write_bytes(bytes(raw))
    (tmp / "plain.txt").write_text("not data\n")
    (tmp / "syntax.yaml").write_text("parameters: {model.lr: [1, 2\n")
    (tmp / "values.yaml").write_text(
        "parameters:\n  model.init_args.lr: {values: 0.1}\ncommand: [litlab, fit, '${args}']\n")
    (tmp / "fails.yaml").write_text("parameters:\n  model.init_args.lr: {values: [0.1]}\n"
                                    f"command: [litlab, fit, --config, {REPO / 'configs' / 'base.yaml'}, '${{args}}']\n")
    fit = ["fit", *FIT, "--data.data_dir", str(data)]
    return {
        # data files
        "test labels outside the classes": (["fit", *FIT, "--data.data_dir", str(mnist_with(tmp / "l", "t10k",
                                            labels=labels))], "test labels are outside the 10 classes", None),
        "images of the wrong shape": (["fit", *FIT, "--data.data_dir", str(mnist_with(
            tmp / "s", "train", images=np.zeros((600, 20, 20), np.uint8)))], "expected uint8 [N, 1, 28, 28]", None),
        "subset that is a plain file": ([*fit, "--data.class_path", "datamodules.MNISTSubset", "--data.data_dir",
                                         str(tmp / "plain.txt")], "plain.txt is not a readable MNIST subset", None),
        "subset with a malformed array": ([*fit, "--data.class_path", "datamodules.MNISTSubset", "--data.data_dir",
                                           str(npz_with_a_lying_header(tmp / "lying.npz"))], "lying.npz is not a", None),
        # checkpoints
        "altered checkpoint": (["test", *FIT[:-4], "--ckpt_path", str(tmp / "rotten.ckpt")], "is corrupt", None),
        "torn checkpoint": (["test", *FIT[:-4], "--ckpt_path", str(tmp / "torn.ckpt")], "not a complete", None),
        "checkpoint naming os.system": (["test", *FIT[:-4], "--ckpt_path", str(tmp / "planted.ckpt")],
                                        "names the class 'os.system'", None),
        "resume with another lr": ([*fit, "--ckpt_path", "last", "--model.lr", "0.5"], "model.lr: checkpoint", None),
        "best of an experiment without runs": (["test", *FIT, "--trainer.logger.init_args.name", "none",
                                                "--ckpt_path", "best"], "no last.ckpt under runs/none", None),
        # arguments
        "negative seed": ([*fit, "--seed_everything", "-1"], "seed_everything must be in [0, 2**32)", None),
        "huge data seed": ([*fit, "--data.seed", str(2**70)], "seed must be in [0, 2**32)", None),
        # sweep files
        "sweep file with a YAML error": (["sweep", str(tmp / "syntax.yaml")], "is not valid YAML at line 2", None),
        "sweep values not a list": (["sweep", str(tmp / "values.yaml")], "needs `values:` as a non-empty list", None),
        "sweep whose every run fails": (["sweep", str(tmp / "fails.yaml"), "--out", str(tmp / "sw"), "--",
                                         "--data.data_dir", str(tmp / "nowhere"), "--data.download", "false"],
                                        "all 1 runs failed", None),
        # write failures
        "resume past a file-size limit": ([*fit, "--ckpt_path", "last", "--trainer.max_epochs", "3"],
                                          "File too large", 30_000),
        "runs folder that is a file": ([*fit, "--trainer.logger.init_args.save_dir", str(tmp / "plain.txt")],
                                       "cannot create the runs folder", None),
    }


@pytest.mark.timeout(900)  # 16 CLI subprocesses: ~4 min on a loaded 2-core machine
@pytest.mark.slow
def test_every_bad_input_ends_in_one_litlab_line_and_leaves_the_run_alone(tmp_path):
    data = make_mnist_dir(tmp_path / "data")
    cli = cli_main(["fit", *FIT, "--data.data_dir", str(data)])
    run = Path(cli.trainer.log_dir)
    before = tree_hash(run)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "offline"}
    failures = []
    for name, (argv, expected, fsize) in bad_inputs(tmp_path, data, run).items():
        limit = (lambda n=fsize: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))) if fsize else None
        proc = subprocess.run([sys.executable, "-m", "cli", *argv], env=env, capture_output=True, text=True,
                              timeout=300, preexec_fn=limit, cwd=tmp_path)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("litlab")]
        if not (proc.returncode != 0 and len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr
                and tree_hash(run) == before):
            failures.append(f"{name}: exit {proc.returncode}, {lines}, changed={tree_hash(run) != before}\n"
                            f"{proc.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert sorted(p.name for p in run.parent.iterdir() if p.name.startswith(".")) == []  # no copy left beside it
