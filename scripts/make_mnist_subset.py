"""Rebuild `datamodules/data/mnist_subset.npz`: a seeded 6,000 / 1,000 subset of the official MNIST files.

    python scripts/make_mnist_subset.py --raw ../shared/data/MNIST/raw

MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, under CC BY-SA 3.0; the subset keeps that
licence (see datamodules/data/README.md).
"""

import argparse
from pathlib import Path

import numpy as np

from datamodules.mnist import EMBEDDED_SUBSET, read_idx
from runtime.files import replacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=Path("../shared/data/MNIST/raw"), help="folder of the .gz files")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=EMBEDDED_SUBSET)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    arrays = {}
    for split, prefix, n in (("train", "train", args.train), ("test", "t10k", args.test)):
        images = read_idx(args.raw / f"{prefix}-images-idx3-ubyte.gz").numpy()
        labels = read_idx(args.raw / f"{prefix}-labels-idx1-ubyte.gz").numpy()
        keep = np.sort(rng.choice(len(labels), size=n, replace=False))
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[keep], labels[keep]
    with replacing(args.out) as tmp, open(tmp, "wb") as f:  # atomic: a crash never leaves a half-written subset
        np.savez_compressed(f, **arrays)  # a file object: savez would add ".npz" to the temporary name
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB):",
          {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main()
