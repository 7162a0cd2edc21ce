"""CIFAR-10 in memory (50,000 train / 10,000 test 3x32x32 colour images), read without unrestricted unpickling.

The files are the "python version" from https://www.cs.toronto.edu/~kriz/cifar.html in torchvision's layout,
`<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`: each a pickled dict with `data`
(uint8 [10000, 3072], the R, G and B 32x32 planes of each image) and `labels` (10,000 ints). torchvision's
`CIFAR10` reads them with plain `pickle.load`, which runs whatever callable a file names, so a tampered file
executes code. litlab reads them with `SafeUnpickler`, which only rebuilds dicts, lists, str, bytes, numbers and
numpy arrays, then checks every array's dtype and shape.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules.base import InMemoryDataModule, TensorBatches
from datamodules.mnist import DataError

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"


def _numpy_reconstruct() -> Any:
    try:  # numpy >= 2 moved it; files written by numpy 1 (and the real ones) name numpy.core.multiarray
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a callable or class outside `SafeUnpickler.ALLOWED`."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: every other global a file names is refused.

    What an ndarray's pickle needs: `_reconstruct` (an empty array), `ndarray`, `dtype`, and `_codecs.encode`,
    which is how Python 3 writes `bytes` at protocol 2 (the real files, from Python 2, do not need it).
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise RefusedGlobal(
            f"refused to load the global {module}.{name}: CIFAR-10 files hold only dicts, lists and numpy arrays"
        )


def read_batch(path: Path) -> dict[str, Any]:
    """One CIFAR-10 batch file as a dict with str keys (Python 2's byte-string keys decoded as latin-1)."""
    try:
        raw = path.read_bytes()
        # latin-1 maps Python 2's byte strings (the array payloads) one-to-one onto str, as numpy expects.
        data = SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except RefusedGlobal as err:
        raise DataError(f"{path} is not a plain CIFAR-10 batch file ({err}). Delete it and download it again; "
                        "do not load it with pickle elsewhere.") from err
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path} is truncated or corrupt ({err}). Delete it and download it again.") from err
    if not isinstance(data, dict):
        raise DataError(f"{path} does not hold a dict (it holds {type(data).__name__}); download it again.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


def read_split(folder: Path, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """The batch files `names` concatenated: (uint8 [N, 3, 32, 32], int64 [N]), checking types and sizes."""
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = read_batch(path)
        data, targets = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: 'data' must be a uint8 array of shape [N, 3072]; download the file again.")
        if not isinstance(targets, list) or len(targets) != len(data) or not all(
                isinstance(t, int) and 0 <= t < 10 for t in targets):
            raise DataError(f"{path}: 'labels' must be {len(data)} ints in 0..9; download the file again.")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # [N, 3072] = R, G, B planes
        labels.append(torch.tensor(targets, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


class RandomCropFlip:
    """Random `padding`-pixel shifted crop and horizontal flip of a float batch [B, C, H, W], per image.

    Padding is zero in normalised units, i.e. the data set's mean colour. Seeded, with its own generators (the
    global RNG is left alone): called with `(epoch, batch_index)` as `TensorBatches` does, each batch's crops
    and flips are a function of (seed, epoch, batch index) alone, so a run resumed mid-epoch augments its
    remaining batches exactly as the uninterrupted run did; called with the batch only, one seeded stream.
    """

    def __init__(self, padding: int = 4, seed: int = 0) -> None:
        self.padding, self.seed = padding, seed
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor, epoch: int | None = None, batch_index: int | None = None) -> Tensor:
        b, _, h, w = x.shape
        p = self.padding
        if epoch is not None and batch_index is not None:
            # A fresh stream per batch; the odd multipliers keep (seed, epoch, batch) triples from colliding.
            self.generator.manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + batch_index) & (2**63 - 1))
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # [B, C, H+2p, W+2p]
        dy, dx = torch.randint(0, 2 * p + 1, (2, b), generator=self.generator).to(x.device)
        flip = torch.randint(0, 2, (b,), generator=self.generator).bool().to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
        cols = (dx[:, None] + torch.arange(w, device=x.device))  # [B, W]
        cols = torch.where(flip[:, None], cols.flip(-1), cols)[:, None, None, :]  # [B, 1, 1, W]
        channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return padded[torch.arange(b, device=x.device)[:, None, None, None], channels, rows, cols]


class CIFAR10(InMemoryDataModule):
    """CIFAR-10: 10 classes of 3x32x32 colour images; 50,000 train (split into train/val) and 10,000 test."""

    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    image_shape = (3, 32, 32)

    def __init__(self, data_dir: str = "data", batch_size: int = 128, eval_batch_size: int = 1000,
                 val_size: int = 5000, train_size: int | None = None, seed: int = 0, download: bool = True,
                 imbalance: dict[str, float] | None = None, label_noise: float = 0.0,
                 classes: list[str | int] | None = None, augment: bool = False) -> None:
        """
        Args:
            data_dir: Folder holding `cifar-10-batches-py/` (torchvision's layout).
            batch_size: Training batch size (per device under DDP).
            eval_batch_size: Batch size for validation, test and predict.
            val_size: Examples held out of the 50,000 training images for validation (seeded).
            train_size: Train on this many of the remaining examples (seeded subset); None uses all of them.
            seed: Seed of the split, the subset, the shuffling order and the augmentation.
            download: Download the archive with torchvision (md5-checked) when files are missing; False fails
                fast offline.
            imbalance: Keep only this fraction of the training examples of these classes, e.g. `{"cat": 0.1}`.
            label_noise: Fraction of training labels changed to a different random class (seeded).
            classes: Keep only these classes, relabelled 0..k-1 in this order, e.g. `[cat, dog]` for the
                binary task.
            augment: Random crop (4-pixel padding) and horizontal flip of every training batch.
        """
        super().__init__(data_dir, batch_size, eval_batch_size, val_size, train_size, seed, download,
                         imbalance, label_noise, classes)
        self.augment = augment

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / FOLDER

    def _missing(self) -> list[str]:
        return [n for n in (*TRAIN_FILES, *TEST_FILES, META_FILE) if not (self.folder / n).is_file()]

    def _download(self) -> None:
        from torchvision.datasets import CIFAR10 as TV
        from torchvision.datasets.utils import check_integrity, download_and_extract_archive

        # torchvision's URL and md5s, but not its CIFAR10 class: constructing it would pickle.load the files.
        download_and_extract_archive(TV.url, self.data_dir, filename=TV.filename, md5=TV.tgz_md5)
        for name, md5 in [*TV.train_list, *TV.test_list, (TV.meta["filename"], TV.meta["md5"])]:
            if not check_integrity(str(self.folder / name), md5):
                raise DataError(f"{self.folder / name} failed its md5 check after download; delete it and retry.")

    def prepare_data(self) -> None:
        # Only fetch (one process per node); decoding happens once, in setup.
        self._ensure_files()

    def _ensure_files(self) -> None:
        if self._missing() and self.download:
            try:
                self._download()
            except DataError:
                raise
            except Exception as err:  # URLError, RuntimeError, ... when offline
                raise DataError(self._missing_message(f"Downloading failed: {err}.")) from err
        if missing := self._missing():
            why = "the download did not produce them" if self.download else "download=False, so nothing was fetched"
            raise DataError(self._missing_message(f"Missing: {', '.join(missing)}; {why}."))

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        self._ensure_files()
        names = read_batch(self.folder / META_FILE).get("label_names")
        if names is not None and tuple(names) != type(self).class_names:
            raise DataError(f"{self.folder / META_FILE} lists classes {names}, not CIFAR-10's; download again.")
        return read_split(self.folder, TRAIN_FILES if train else TEST_FILES)

    def _missing_message(self, why: str) -> str:
        return (f"CIFAR-10 files not found in {self.folder.resolve()} (data_batch_1..5, test_batch, batches.meta). "
                f"{why} Copy the extracted cifar-10-python.tar.gz there (or set data.data_dir to the folder "
                f"that holds {FOLDER}/), or set download true with a network.")

    def train_dataloader(self) -> TensorBatches:
        batches = super().train_dataloader()
        if self.augment and batches.sampler is not None:  # not under overfit_batches, which wants fixed batches
            batches.augment = RandomCropFlip(padding=4, seed=self.seed * 1000 + batches.rank)
        return batches
