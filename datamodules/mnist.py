"""MNIST, Fashion-MNIST and the small real-MNIST subset shipped inside litlab."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules.base import InMemoryDataModule
from datamodules.errors import DataError
from datamodules.images import digit_like_mnist
from datamodules.location import LAYOUTS, download, found_layouts

EMBEDDED_SUBSET = Path(__file__).parent / "data" / "mnist_subset.npz"


def read_idx(path: Path) -> Tensor:
    """Read an IDX file (the MNIST format, optionally gzipped) into a uint8 tensor, checking its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises these on a truncated or non-gzip file
        raise DataError(f"{path} is corrupt ({err}). Delete it and download or copy it again.") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number). Download or copy it again.")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64) if len(raw) >= 4 + 4 * ndim else []
    expected = 4 + 4 * ndim + int(np.prod(dims)) if len(dims) == ndim else -1
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or corrupt: {len(raw)} bytes, expected {expected} for shape "
            f"{[int(d) for d in dims]}. "
            "Delete it and download or copy it again."
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims.tolist())
    return torch.from_numpy(data.copy())


class MNIST(InMemoryDataModule):
    """MNIST digits, 60,000 train (split into train/val) and 10,000 test images of 1x28x28."""

    folder = "MNIST"
    class_names = tuple(str(d) for d in range(10))
    mean, std = (0.1307,), (0.3081,)
    image_shape = (1, 28, 28)
    files = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

    def image_from_file(self, img: Any) -> Tensor:
        """A photo or drawing of a digit as MNIST's digits were made (`datamodules.images.digit_like_mnist`)."""
        return digit_like_mnist(img)

    def _torchvision_download(self, train: bool) -> None:
        from torchvision import datasets

        dataset = getattr(datasets, type(self).folder)
        download(lambda: dataset(root=self.data_dir, train=train, download=True), Path(self.data_dir),
                 dataset.mirrors[0])

    def _find(self, name: str) -> Path | None:
        raw = Path(self.data_dir) / self.folder / "raw"
        for candidate in (raw / name, raw / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        names = self.files[train]
        if any(self._find(n) is None for n in names) and self.download:
            try:
                self._torchvision_download(train)
            except Exception as err:  # OSError from the network check, torchvision's URLError, RuntimeError, ...
                raise DataError(self._missing_message(names, f"Downloading failed ({err}); the data folder was left "
                                                             "as it was.")) from err
        paths = [self._find(n) for n in names]
        if any(p is None for p in paths):
            raise DataError(self._missing_message(names, "download=False, so nothing was fetched."))
        images, labels = (read_idx(p) for p in paths)
        if len(images) != len(labels):
            raise DataError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels.")
        return images.unsqueeze(1), labels.long()

    def _missing_message(self, names: tuple[str, ...], why: str) -> str:
        root = Path(self.data_dir).resolve()
        return (
            f"{self.folder} files not found in {root / self.folder / 'raw'} ({', '.join(names)}, plain or .gz). "
            f"litlab reads {', '.join(f'{k}/' for k in LAYOUTS)} in the data folder; {found_layouts(root)}. {why} "
            f"Put the standard files in {self.folder}/raw/ there, point $LITLAB_DATA (or data.data_dir) at the "
            f"folder that holds {self.folder}/raw/, or run the embedded subset: --data datamodules.MNISTSubset."
        )


class FashionMNIST(MNIST):
    """Fashion-MNIST: 10 clothing classes, same sizes and format as MNIST."""

    folder = "FashionMNIST"
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    mean, std = (0.2860,), (0.3530,)

    def image_from_file(self, img: Any) -> Tensor:
        # Fashion-MNIST's products fill the 28x28 frame, centred by their bounding box, not a 20x20 box.
        return digit_like_mnist(img, box=28, by_mass=False)


class MNISTSubset(MNIST):
    """A real-MNIST subset shipped inside litlab (6,000 train / 1,000 test): runs offline with no set-up.

    Made by `scripts/make_mnist_subset.py` from the official files. MNIST is by Yann LeCun, Corinna Cortes and
    Christopher J.C. Burges, under the Creative Commons Attribution-Share Alike 3.0 licence.
    """

    def __init__(self, data_dir: str = str(EMBEDDED_SUBSET), val_size: int = 1000, download: bool = False,
                 **kwargs: Any) -> None:
        """
        Args:
            data_dir: The subset's `.npz` file (the one inside the package by default).
            val_size: Examples of the 6,000 held out for validation (seeded).
            download: Unused: the subset is shipped, never downloaded.
            **kwargs: The other arguments of every litlab data module (`InMemoryDataModule`).
        """
        super().__init__(data_dir=data_dir, val_size=val_size, download=download, **kwargs)

    def prepare_data(self) -> None:
        pass

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        path = Path(self.data_dir)
        if not path.is_file():
            raise DataError(f"{path} not found: reinstall litlab or run scripts/make_mnist_subset.py to rebuild it.")
        split = "train" if train else "test"
        try:
            with np.load(path, allow_pickle=False) as npz:  # never unpickle data files
                images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
        except Exception as err:  # numpy's own text for a non-.npz file advises allow_pickle: not for users
            why = "not an .npz archive" if "pickle" in str(err) else f"{type(err).__name__}: {err}"
            raise DataError(f"{path} is not a readable MNIST subset ({why}). Point data.data_dir at the .npz "
                            "scripts/make_mnist_subset.py writes, or rebuild it with that script.") from err
        return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()
