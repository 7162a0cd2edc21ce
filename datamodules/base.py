"""In-memory image data: decode once into uint8 tensors, serve batches by indexing them.

Small image sets (MNIST: 47 MB as uint8) fit on any device, so a `DataLoader` with per-sample PIL decoding
and worker processes only adds overhead. Subclasses implement `_load(train)` returning the whole split as
`uint8 [N, C, H, W]` images and `int64 [N]` labels; this module does the split, sharding, shuffling and the
on-the-fly normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from datamodules.images import ImageFileError, image_files, load_images, photo_like_cifar
from datamodules.location import default_data_dir
from datamodules.skew import flip_labels, keep_fraction_of_classes, resolve_classes, resolve_subset
from datamodules.errors import DataError
from runtime.lightning_private import batches_processed


class Normalization:
    """Per-channel `x = (u8 / 255 - mean) / std` and its inverse: the only place litlab applies mean and std.

    1/255 is folded into one affine map, `x = u8 * scale + shift` (one fused op per batch); the per-device
    copies of scale/shift are made once.
    """

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)  # [1, C, 1, 1]
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._affine: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._affine:
            self._affine[device] = ((1.0 / (255.0 * self.std)).to(device), (-self.mean / self.std).to(device))
        return self._affine[device]

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> float32 [N, C, H, W] as the model sees it."""
        scale, shift = self._on(images.device)
        return images.float().mul_(scale).add_(shift)

    def denormalize(self, x: Tensor) -> Tensor:
        """Model inputs [N, C, H, W] -> pixel values (1.0 = white), unclamped."""
        return x * self.std.to(x.device, x.dtype) + self.mean.to(x.device, x.dtype)


class TensorBatches:
    """An iterable of normalised `(x float32 [B, C, H, W], y int64 [B])` batches over in-memory tensors.

    The order comes from `sampler`, a `DistributedSampler` over positions in `indices`: it shuffles with
    `seed + epoch`, gives each rank an equal shard, and Lightning calls its `set_epoch` at every epoch start
    (it looks for a `.sampler` attribute), so the data order is a pure function of (seed, epoch, rank).
    """

    batch_sampler = None  # Lightning inspects DataLoader-like attributes; batching is done here, not by a sampler

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        indices: Tensor,
        batch_size: int,
        mean: Tensor,
        std: Tensor,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        progress: Callable[[], int] | None = None,
    ) -> None:
        self.progress = progress
        self.images, self.labels, self.indices = images, labels, indices
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # Applied to each normalised float batch [B, C, H, W] (e.g. CIFAR-10's random crop + flip); None = off.
        # Called as augment(x, epoch, batch_index): seeding per batch keeps a mid-epoch resume bit-exact.
        self.augment: Callable[[Tensor, int, int], Tensor] | None = None
        self.pool: Tensor | None = None  # positions into `indices` that shuffled epochs draw from; None = all
        self.normalization = Normalization(mean, std)
        if shuffle:
            # Pads by repeating a few examples so every rank sees the same number of batches (DDP needs it).
            self.sampler: DistributedSampler | None = DistributedSampler(
                indices, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
            )
            self._num_samples = self.sampler.num_samples
        else:
            # Evaluation: an exact, unpadded shard so metrics count every example once.
            self.sampler = None
            self.indices = indices[rank::world_size]
            self._num_samples = len(self.indices)

    def __len__(self) -> int:
        return math.ceil(self._num_samples / self.batch_size)

    def _order(self) -> Tensor:
        if self.sampler is None:
            return self.indices
        if self.pool is not None:
            return self._pool_order()
        return self.indices[torch.tensor(list(self.sampler), dtype=torch.long)]

    def set_pool(self, positions: Tensor | None) -> None:
        """Draw the shuffled epochs from `positions` (int64, into `indices`) only, e.g. a curriculum's easiest
        examples; None restores the whole split. Takes effect at the next `iter()` (set it in
        `on_train_epoch_start`). The epoch keeps its length, so Lightning's step counts and validation hold."""
        if self.sampler is None:
            raise ValueError("set_pool applies to shuffled (training) batches only; evaluation covers every example.")
        if positions is not None and len(positions) == 0:
            raise ValueError("set_pool needs at least one position (None for the whole split).")
        self.pool = None if positions is None else positions.long().cpu()

    def _pool_order(self) -> Tensor:
        # As many shuffled passes over the pool as fill the usual epoch (Hacohen & Weinshall's fixed-length
        # epochs), seeded by (seed, epoch) alike on every rank, then this rank's equal share.
        assert self.sampler is not None and self.pool is not None
        generator = torch.Generator().manual_seed(self.seed + self.sampler.epoch)
        total = self.sampler.total_size  # the whole split's epoch, padded to a multiple of world_size
        passes = [self.pool[torch.randperm(len(self.pool), generator=generator)]
                  for _ in range(math.ceil(total / len(self.pool)))]
        return self.indices[torch.cat(passes)[:total][self.rank : total : self.world_size]]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._order().to(self.images.device)
        batches = order.split(self.batch_size)
        # -- exact resume (callbacks/training/checkpoint.py): skip the batches a checkpointed epoch had already trained on
        epoch = self.sampler.epoch if self.sampler is not None else 0
        skip = self._resume.get("batches_done", 0) if self._resume.get("epoch") == epoch else 0
        self._resume, self._active_epoch = {}, epoch
        for i in range(skip, len(batches)):
            batch = batches[i]
            x = self.normalization.normalize(self.images[batch])
            yield (x if self.augment is None else self.augment(x, epoch, i)), self.labels[batch]
        self._active_epoch = None

    # Lightning saves these with the fit loop (a `_Stateful` train loader) and loads them before the first
    # resumed batch, so a mid-epoch resume replays the same (seed, epoch) order from the next unseen batch.
    # `progress` (constructor): how many batches the training loop has finished this epoch.
    _resume: dict = {}
    _active_epoch: int | None = None

    def state_dict(self) -> dict[str, int]:
        epoch = self.sampler.epoch if self.sampler is not None else 0
        # The loop prefetches a batch ahead, so what was yielded over-counts; the loop's own count is exact.
        done = int(self.progress()) if self._active_epoch == epoch and self.progress is not None else 0
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)


class InMemoryDataModule(L.LightningDataModule):
    """Base class of litlab's image data modules (see the module docstring)."""

    class_names: Sequence[str] = ()
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    image_shape: tuple[int, int, int] = (1, 28, 28)

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        train_size: int | None = None,
        seed: int = 0,
        download: bool = True,
        imbalance: dict[str, float] | None = None,
        label_noise: float = 0.0,
        classes: list[str | int] | None = None,
        predict_path: str | None = None,
        prepare_per_node: bool = False,
    ) -> None:
        """
        Args:
            data_dir: Folder holding the data set (torchvision's layout, e.g. `<data_dir>/MNIST/raw/`); None:
                `$LITLAB_DATA`, else `~/.cache/litlab` (`$XDG_CACHE_HOME/litlab`), where downloads go.
            batch_size: Training batch size (per device under DDP).
            eval_batch_size: Batch size for validation, test and predict.
            val_size: Examples held out of the official training split for validation (seeded).
            train_size: Train on this many of the remaining examples (seeded subset); None uses all of them.
            seed: Seed of the train/val split, the train subset and the shuffling order.
            download: Download missing files (needs a network); set False to fail fast when offline.
            imbalance: Keep only this fraction of the training examples of these classes (class name or index
                → fraction), e.g. `{"3": 0.05, "8": 0.05}`; seeded; val and test stay balanced.
            label_noise: Fraction of training labels changed to a different random class (seeded); val and test
                labels stay clean.
            classes: Keep only these classes (names or original indices) in every split, relabelled 0..k-1 in
                the given order, e.g. `[cat, dog]`; `num_classes` and `class_names` follow. None keeps all.
                `imbalance` then names classes of the subset.
            predict_path: `litlab predict` classifies these PNG/JPEG files (one file, or a folder's images),
                each brought to the training images' form (`image_from_file`); None predicts the test split.
            prepare_per_node: Download on the first process of every node (data_dir on each node's local
                disk) instead of once per job (data_dir on a file system all nodes share; concurrent
                downloads into one folder would corrupt it).
        """
        super().__init__()
        self.save_hyperparameters()
        if not (1 <= batch_size < 2**31 and 1 <= eval_batch_size < 2**31):
            raise ValueError(f"batch_size and eval_batch_size must be >= 1, got {batch_size} and {eval_batch_size}.")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}.")
        if val_size < 0 or (train_size is not None and train_size < 1):
            raise ValueError(f"val_size must be >= 0 and train_size >= 1 (or None), got {val_size} and {train_size}.")
        self.data_dir = data_dir or default_data_dir()  # one rule for every data module (datamodules/location.py)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.train_size, self.seed, self.download = val_size, train_size, seed, download
        # The original indices kept, in their new order; class_names (an instance attribute from here on) follow.
        self._subset = resolve_subset(classes, self.class_names)
        if self._subset is not None:
            self.class_names = tuple(self.class_names[i] for i in self._subset)
        self._imbalance = resolve_classes(imbalance or {}, self.class_names)
        if not 0.0 <= label_noise <= 1.0:
            raise ValueError(f"label_noise must be a fraction in [0, 1], got {label_noise}.")
        self.label_noise = label_noise
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.predict_path = predict_path
        self.prepare_data_per_node = prepare_per_node  # Lightning's switch: prepare_data on local vs global rank 0
        # What `litlab predict` read (callbacks.PredictionsCSV writes them): the files predicted, in batch order,
        # and {file: why not} for those that could not be read.
        self.predict_files: list[str] = []
        self.predict_errors: dict[str, str] = {}

    # -- what subclasses provide -----------------------------------------------------------------------
    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        """Return the official train or test split as (uint8 [N, C, H, W], int64 [N])."""
        raise NotImplementedError

    # -- what models and callbacks read: datamodules.LitlabData ------------------------------------------------
    @property
    def normalization(self) -> Normalization:
        if "_normalization" not in self.__dict__:
            self._normalization = Normalization(self.mean, self.std)
        return self._normalization

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> float32 [N, C, H, W], normalised as the model sees it."""
        return self.normalization.normalize(images)

    def denormalize(self, x: Tensor) -> Tensor:
        """Model inputs [N, C, H, W] -> pixel values (1.0 = white), unclamped."""
        return self.normalization.denormalize(x)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.image_shape)

    def prepare_data(self) -> None:
        # Runs on one process per node: fetch files once so ranks don't race to download them.
        if self.download:
            self._load(train=True)
            self._load(train=False)

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        images, labels = self._keep_classes(*self._checked_load(train=True))
        if self.val_size >= len(labels):
            raise ValueError(f"val_size={self.val_size} leaves no training data: the split has {len(labels)} examples.")
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        if self.train_size is not None:
            if self.train_size > len(train_idx):
                raise ValueError(
                    f"train_size={self.train_size} is larger than the {len(train_idx)} training examples left after "
                    f"holding out val_size={self.val_size}; lower train_size or val_size."
                )
            train_idx = train_idx[: self.train_size]
        test_images, test_labels = self._keep_classes(*self._checked_load(train=False))
        # Indices are kept sorted so a subset is a plain slice of the decoded tensors.
        self._splits = {
            "train": tuple(t.to(device) for t in self._skewed_train(images, labels, train_idx.sort().values)),
            "val": (images[val_idx.sort().values].to(device), labels[val_idx.sort().values].to(device)),
            "test": (test_images.to(device), test_labels.to(device)),
        }

    def _checked_load(self, train: bool) -> tuple[Tensor, Tensor]:
        """`_load`, refusing files of another data set or shape before a model trains on them (a label outside the
        classes would otherwise fail deep in the loss, maybe only when testing after training)."""
        images, labels = self._load(train)
        split, where = "train" if train else "test", f"{type(self).__name__} data in {self.data_dir}"
        fix = "Check data.data_dir and data.class_path, or download or copy the files again."
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != tuple(self.image_shape):
            dtype = str(images.dtype).removeprefix("torch.")
            raise DataError(f"{where}: the {split} images are {dtype} {list(images.shape)}, expected uint8 "
                            f"[N, {', '.join(map(str, self.image_shape))}]. {fix}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{where}: the {split} labels have shape {list(labels.shape)}, expected [{len(images)}] "
                            f"(one per image). {fix}")
        classes = len(type(self).class_names)
        outside = labels[(labels < 0) | (labels >= classes)] if classes else labels[:0]
        if len(outside):
            raise DataError(f"{where}: {len(outside)} {split} labels are outside the {classes} classes "
                            f"0..{classes - 1} (e.g. {int(outside[0])}). {fix}")
        return images, labels

    def _keep_classes(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Only the examples of the `classes` subset, labels mapped to their position in it (0..k-1)."""
        if self._subset is None:
            return images, labels
        new = torch.full_like(labels, -1)
        for position, original in enumerate(self._subset):
            new[labels == original] = position
        keep = (new >= 0).nonzero().flatten()
        return images[keep], new[keep]

    def _skewed_train(self, images: Tensor, labels: Tensor, train_idx: Tensor) -> tuple[Tensor, Tensor]:
        """The training split's images and labels with `imbalance` and `label_noise` applied (seeded)."""
        labels = labels[train_idx]
        generator = torch.Generator().manual_seed(self.seed + 1_000_003)  # independent of the split's stream
        if self._imbalance:
            keep = keep_fraction_of_classes(labels, self._imbalance, generator)
            train_idx, labels = train_idx[keep], labels[keep]
        if self.label_noise > 0:
            labels = flip_labels(labels, self.label_noise, self.num_classes, generator)
        return images[train_idx], labels

    def train_class_counts(self) -> Tensor:
        """`int64 [num_classes]` label counts of the training split as trained on (after imbalance and noise)."""
        return self.class_counts("train")

    def class_counts(self, split: str) -> Tensor:
        """`int64 [num_classes]` label counts of a split: "train" (as trained on), "val" or "test"."""
        if not self._splits:
            self.setup()
        return torch.bincount(self._splits[split][1].cpu(), minlength=self.num_classes)

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        if not self._splits:
            self.setup()
        images, labels = self._splits[split]
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TensorBatches(
            images,
            labels,
            torch.arange(len(labels)),
            self.batch_size if shuffle else self.eval_batch_size,
            self.normalization.mean,
            self.normalization.std,
            shuffle=shuffle,
            seed=self.seed,
            rank=rank,
            world_size=world,
            **({"progress": lambda: batches_processed(trainer)}
               if shuffle and trainer is not None else {}),
        )

    def train_dataloader(self) -> TensorBatches:
        # overfit_batches must see the same batches every epoch; Lightning can only un-shuffle a DataLoader.
        overfit = self.trainer is not None and self.trainer.overfit_batches > 0
        return self._batches("train", shuffle=not overfit)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)

    def image_from_file(self, img: Any) -> Tensor:
        """One decoded PIL image as the data set's images are: `uint8 [C, H, W]` of `image_shape` (here: RGB
        or grey, the central square resized; MNIST-like sets override it)."""
        c, h, _ = self.image_shape
        x = photo_like_cifar(img, h)
        return x if c == 3 else x.float().mean(0, keepdim=True).round().to(torch.uint8)

    def predict_dataloader(self) -> TensorBatches:
        if self.predict_path is None:
            return self._batches("test", shuffle=False)
        images, files, self.predict_errors = load_images(image_files(self.predict_path), self.image_from_file)
        self.predict_files = [str(f) for f in files]
        if not files:
            raise ImageFileError("none of the files in predict_path could be read: "
                                 + "; ".join(self.predict_errors.values()))
        # Batches of (normalised images, position in predict_files). Every rank predicts every file: rank zero
        # alone writes them, and a folder of photos is small.
        return TensorBatches(images, torch.arange(len(files)), torch.arange(len(files)), self.eval_batch_size,
                             self.normalization.mean, self.normalization.std, shuffle=False)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # TensorBatches index tensors that already live on the root device: skip Lightning's per-step recursive
        # move (a few % of a small MLP's step); anything else takes the generic path.
        if type(batch) in (tuple, list) and all(isinstance(t, Tensor) and t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def split_tensors(self, split: str = "test", limit: int | None = None) -> tuple[Tensor, Tensor]:
        """A whole split (or its first `limit` examples) as normalised `float32 [N, C, H, W]` and `int64 [N]`."""
        if not self._splits:
            self.setup()
        images, labels = self._splits[split]
        return self.normalize(images[:limit]), labels[:limit]

    def num_examples(self, split: str) -> int:
        if not self._splits:
            self.setup()
        return len(self._splits[split][1])
