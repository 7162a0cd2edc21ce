"""CIFAR-10 in memory (50,000 train / 10,000 test 3x32x32 colour images), read without unrestricted unpickling.

Two layouts from https://www.cs.toronto.edu/~kriz/cifar.html, the first complete one in `<data_dir>` wins:
- `cifar-10-batches-bin/` (the "binary version"; preferred, and the one downloaded): `data_batch_1..5.bin`
  and `test_batch.bin` are runs of 3,073-byte records (1 label byte 0..9, then the 1,024 red, 1,024 green
  and 1,024 blue values of the 32x32 image, row by row); `batches.meta.txt` has the class names, one a line.
  Read with numpy alone: nothing is unpickled.
- `cifar-10-batches-py/` (the "python version", torchvision's layout): pickled dicts of `data` (uint8
  [10000, 3072], the R, G, B planes) and `labels`. torchvision's `CIFAR10` reads them with `pickle.load`, which
  runs whatever callable a file names; litlab uses `SafeUnpickler`, which only rebuilds dicts, lists, str,
  bytes, numbers and numpy arrays, then checks every array's dtype and shape.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from datamodules.base import InMemoryDataModule, TensorBatches
from datamodules.errors import DataError
from datamodules.location import download, found_layouts

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
BIN_FOLDER = "cifar-10-batches-bin"
BIN_TRAIN_FILES = tuple(f"{name}.bin" for name in TRAIN_FILES)
BIN_TEST_FILES = ("test_batch.bin",)
BIN_META_FILE = "batches.meta.txt"
# Each folder's (train files, test files, meta file), in order of preference.
LAYOUTS = {BIN_FOLDER: (BIN_TRAIN_FILES, BIN_TEST_FILES, BIN_META_FILE), FOLDER: (TRAIN_FILES, TEST_FILES, META_FILE)}
BIN_URL, BIN_MD5 = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"
RECORD = 1 + 3 * 32 * 32  # bytes per binary record: the label, then the R, G and B planes
OFFICIAL_RECORDS = 10_000  # per official file, training and test alike


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


def read_bin_split(folder: Path, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """The binary files `names` concatenated: (uint8 [N, 3, 32, 32], int64 [N]), checking sizes and labels."""
    images, labels = [], []
    for name in names:
        path = folder / name
        raw = path.read_bytes()
        if not raw or len(raw) % RECORD:
            # A copy or download cut short: refuse it rather than drop or misalign the partial record.
            size = (f"{len(raw):,} bytes, not a whole number of {RECORD:,}-byte records ({len(raw) // RECORD:,} "
                    f"whole records and {len(raw) % RECORD:,} bytes over)") if raw else "empty"
            raise DataError(f"{path} is {size}: it is truncated or corrupt. Delete it and download or copy it again.")
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)  # [N, 3073]
        if (bad := np.flatnonzero(records[:, 0] > 9)).size:
            raise DataError(f"{path}: record {bad[0]:,} has label {records[bad[0], 0]}, outside 0..9 ({bad.size:,} "
                            "such records), so it is not a CIFAR-10 file. Download or copy it again.")
        # Pixel bytes: R plane, G plane, B plane, each 32x32 row-major -> [N, 3, 32, 32] as is.
        images.append(torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(records[:, 0].astype(np.int64)))
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

    def __init__(self, data_dir: str | None = None, augment: bool = False, crop_padding: int = 4,
                 **kwargs: Any) -> None:
        """
        Args:
            data_dir: Folder holding `cifar-10-batches-bin/` (preferred) or `cifar-10-batches-py/`; None:
                `$LITLAB_DATA`, else `~/.cache/litlab` (`$XDG_CACHE_HOME/litlab`), where downloads go. With
                download true, a missing binary archive is downloaded there (md5-checked).
            augment: Random crop (`crop_padding`-pixel padding) and horizontal flip of every training batch.
            crop_padding: How far (pixels) augmentation may shift an image: 4 (the classic recipe) or 2 (airbench).
            **kwargs: The other arguments of every litlab data module (`InMemoryDataModule`).
        """
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}.")
        super().__init__(data_dir=data_dir, **kwargs)
        self.augment, self.crop_padding = augment, crop_padding

    def _missing(self, folder: str) -> list[str]:
        train, test, meta = LAYOUTS[folder]
        return [n for n in (*train, *test, meta) if not (Path(self.data_dir) / folder / n).is_file()]

    def _find(self) -> Path | None:
        """The first complete folder in `LAYOUTS` order (binary first), or None."""
        return next((Path(self.data_dir) / f for f in LAYOUTS if not self._missing(f)), None)

    def prepare_data(self) -> None:
        # Only fetch (one process per node); decoding happens once, in setup.
        self._ensure_files()

    def _ensure_files(self) -> Path:
        if (folder := self._find()) is None and self.download:
            from torchvision.datasets.utils import download_and_extract_archive

            try:  # the binary archive, so the default path never unpickles anything
                download(lambda: download_and_extract_archive(BIN_URL, self.data_dir, filename=Path(BIN_URL).name,
                                                              md5=BIN_MD5), Path(self.data_dir), BIN_URL)
            except Exception as err:  # OSError from the network check, URLError, RuntimeError (md5 mismatch), ...
                raise DataError(self._missing_message(f"Downloading failed ({err}); the data folder was left as it "
                                                      "was.")) from err
            folder = self._find()
        if folder is None:
            why = "The download did not produce them." if self.download else "download=False, so nothing was fetched."
            raise DataError(self._missing_message(why))
        return folder

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        folder = self._ensure_files()
        train_files, test_files, meta = LAYOUTS[folder.name]
        names = train_files if train else test_files
        if folder.name == FOLDER:  # the python version, through the restricted unpickler
            self._check_names(folder / meta, read_batch(folder / meta).get("label_names"))
            return read_split(folder, names)
        lines = (folder / meta).read_text(encoding="latin-1").splitlines()
        self._check_names(folder / meta, [line.strip() for line in lines if line.strip()])
        images, labels = read_bin_split(folder, names)
        if len(labels) != OFFICIAL_RECORDS * len(names):
            # Loadable (e.g. a test subset), but accuracies on it are not comparable with published ones.
            rank_zero_warn(f"CIFAR-10 {'train' if train else 'test'} split in {folder} has {len(labels):,} "
                           f"records, not the official {OFFICIAL_RECORDS * len(names):,} ({', '.join(names)}); "
                           "using them as they are.")
        return images, labels

    def _check_names(self, path: Path, names: list[str] | None) -> None:
        if names is not None and tuple(names) != type(self).class_names:
            raise DataError(f"{path} lists classes {list(names)}, not CIFAR-10's {list(type(self).class_names)}. "
                            "Delete it and download or copy it again.")

    def _missing_message(self, why: str) -> str:
        root = Path(self.data_dir).resolve()
        found = "; ".join(f"{f}/ lacks {', '.join(self._missing(f))}" if (root / f).is_dir()
                          else f"{f}/ does not exist" for f in LAYOUTS)
        found += f"; {found_layouts(root)}" if root.is_dir() else ""  # e.g. MNIST/raw/ where CIFAR-10 was expected
        return (f"CIFAR-10 files not found in {root}: looked for {BIN_FOLDER}/ (data_batch_1..5.bin, test_batch.bin, "
                f"{BIN_META_FILE}) and {FOLDER}/ (data_batch_1..5, test_batch, {META_FILE}); {found}. "
                f"{why} Copy the extracted cifar-10-binary.tar.gz there, point $LITLAB_DATA "
                f"(or data.data_dir) at the folder that holds {BIN_FOLDER}/, or set download true with a network.")

    def train_dataloader(self) -> TensorBatches:
        batches = super().train_dataloader()
        if self.augment and batches.sampler is not None:  # not under overfit_batches, which wants fixed batches
            batches.augment = RandomCropFlip(padding=self.crop_padding, seed=self.seed * 1000 + batches.rank)
        return batches
