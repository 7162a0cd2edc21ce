"""Shared fixtures: tiny MNIST-format files written by the tests, and the real MNIST when it is there."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")  # no W&B server here; never reach the network
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("LITLAB_DATA", REPO.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true")


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose data or tool is absent (a laptop without ../shared), but fail it in CI, where .ci/run and
    the checkout provide ../shared and chromium: there a skip would hide a broken set-up behind a green run."""
    if IN_CI:
        pytest.fail(f"{reason} — with CI=true this is an error: CI provides it")
    pytest.skip(reason)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) as an IDX file, gzipped when `path` ends in .gz (MNIST's real on-disk format)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


def synthetic_digits(n: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 images: class k lights up row band k (plus noise), so a small MLP can fit them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for k in range(num_classes):
        images[labels == k, 2 * k + 4 : 2 * k + 7, 4:24] = 255
    return images, labels


def make_mnist_dir(root: Path, n_train: int = 600, n_test: int = 200, folder: str = "MNIST") -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A data_dir holding a tiny synthetic MNIST (600 train / 200 test) in the real .gz IDX format."""
    return make_mnist_dir(tmp_path / "data")


@pytest.fixture
def real_mnist() -> Path:
    if not (REAL_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
        unavailable(f"real MNIST not found in {REAL_DATA}/MNIST/raw (set LITLAB_DATA to its parent folder)")
    return REAL_DATA


@pytest.fixture
def real_cifar() -> Path:
    if not (REAL_DATA / "cifar-10-batches-bin" / "data_batch_1.bin").is_file():
        unavailable(f"real CIFAR-10 not found in {REAL_DATA}/cifar-10-batches-bin (set LITLAB_DATA to its parent)")
    return REAL_DATA


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own folder so nothing (runs/, wandb/) lands in the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["litlab"])  # cli_main(args) is the only input, as on a command line
