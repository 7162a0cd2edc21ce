"""Tiny CIFAR-10 folders in the real on-disk formats: the python version (pickled dicts of a uint8 [N, 3072] array
and int labels) and the binary version (3,073-byte records: a label byte, then the R, G and B planes)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def synthetic_cifar(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Learnable 3x32x32 images: class k gets a bright 4-row band at rows 3k..3k+3 in channel k % 3."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 60, size=(n, 3, 32, 32)).astype(np.uint8)
    for k in range(10):
        images[labels == k, k % 3, 3 * k : 3 * k + 4, 4:28] = 255
    return images.reshape(n, 3072), [int(v) for v in labels]


def write_batch(path: Path, data: np.ndarray, labels: list[int], label: str) -> None:
    # The real files are Python 2 pickles at protocol 2 with these keys; Python 3's protocol 2 is the closest.
    batch = {"batch_label": label, "labels": labels, "data": data,
             "filenames": [f"img_{i}.png" for i in range(len(labels))]}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def make_cifar_dir(root: Path, per_batch: int = 40, n_test: int = 60) -> Path:
    """`root/cifar-10-batches-py/` with five training batches of `per_batch` images, a test batch and the meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", *synthetic_cifar(per_batch, seed=i), f"training batch {i} of 5")
    write_batch(folder / "test_batch", *synthetic_cifar(n_test, seed=0), "testing batch 1 of 1")
    meta = {"num_cases_per_batch": per_batch, "label_names": NAMES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def write_bin_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """One binary-version file: per image its label byte, then its 3,072 pixel bytes (R, G, B planes)."""
    records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], data.reshape(len(labels), 3072)], axis=1)
    path.write_bytes(records.tobytes())


def make_cifar_bin_dir(root: Path, per_batch: int = 20, n_test: int = 15) -> Path:
    """`root/cifar-10-batches-bin/`: five training files of `per_batch` records, a test file and the meta text.

    Images are `synthetic_cifar(n, seed=10 + i)` (file i; the test file is seed 10), unlike `make_cifar_dir`'s.
    """
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_bin_batch(folder / f"data_batch_{i}.bin", *synthetic_cifar(per_batch, seed=10 + i))
    write_bin_batch(folder / "test_batch.bin", *synthetic_cifar(n_test, seed=10))
    (folder / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")  # a trailing blank line is tolerated
    return root
