"""The CIFAR-10 data module on tiny files in the real format: decoding, safety, subsets, augmentation."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import CIFAR10, MNIST, DataError
from datamodules.cifar10 import RandomCropFlip, read_split
from datamodules.base import TensorBatches
from fake_cifar import NAMES, make_cifar_dir, synthetic_cifar


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    return make_cifar_dir(tmp_path / "cifar")


def test_decodes_the_real_format(cifar_dir):
    images, labels = read_split(cifar_dir / "cifar-10-batches-py", ("data_batch_1", "data_batch_2"))
    data1, labels1 = synthetic_cifar(40, seed=1)
    assert images.dtype == torch.uint8 and images.shape == (80, 3, 32, 32)
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each a 32x32 row-major plane.
    assert torch.equal(images[0, 1].flatten(), torch.from_numpy(data1[0, 1024:2048]))
    assert labels[:40].tolist() == labels1
    dm = CIFAR10(str(cifar_dir), val_size=50, download=False)
    dm.setup()
    assert (dm.num_examples("train"), dm.num_examples("val"), dm.num_examples("test")) == (150, 50, 60)
    assert dm.num_classes == 10 and dm.input_shape == (3, 32, 32) and dm.class_names == tuple(NAMES)
    x, _ = dm.split_tensors("train")
    assert x.shape == (150, 3, 32, 32) and abs(float(x.mean())) < 1.5


def test_class_subset_keeps_and_relabels_in_the_given_order(cifar_dir):
    full = CIFAR10(str(cifar_dir), val_size=0, download=False)
    _, full_test = full.split_tensors("test")
    dm = CIFAR10(str(cifar_dir), val_size=10, download=False, classes=["dog", 3])  # a name and an index
    assert dm.num_classes == 2 and dm.class_names == ("dog", "cat")
    _, test = dm.split_tensors("test")
    assert torch.equal(torch.bincount(test, minlength=2),
                       torch.stack([(full_test == 5).sum(), (full_test == 3).sum()]))
    n_train = int(((full.split_tensors("train")[1] == 3) | (full.split_tensors("train")[1] == 5)).sum())
    assert dm.num_examples("train") + dm.num_examples("val") == n_train
    assert set(dm.split_tensors("val")[1].tolist()) <= {0, 1}


def test_class_subset_with_imbalance_and_label_noise(cifar_dir):
    plain = CIFAR10(str(cifar_dir), val_size=10, download=False, classes=["cat", "dog"])
    skewed = CIFAR10(str(cifar_dir), val_size=10, download=False, classes=["cat", "dog"],
                     imbalance={"dog": 0.5}, label_noise=0.2)
    counts, n = plain.train_class_counts(), plain.num_examples("train")
    assert skewed.train_class_counts().sum() == counts[0] + int(0.5 * counts[1] + 0.5)
    assert set(skewed.split_tensors("train")[1].tolist()) <= {0, 1}  # noise stays inside the subset
    assert torch.equal(skewed.split_tensors("val")[1], plain.split_tensors("val")[1]) and n > 0


def test_class_subset_on_mnist_and_bad_names(mnist_dir):
    dm = MNIST(str(mnist_dir), val_size=50, download=False, classes=[8, "3"])
    assert dm.class_names == ("8", "3") and dm.num_classes == 2
    _, test = dm.split_tensors("test")
    assert set(test.tolist()) == {0, 1}
    with pytest.raises(ValueError, match=r"unknown class 'kitten'; use names from \['airplane', 'automobile'"):
        CIFAR10(classes=["kitten", "dog"])
    with pytest.raises(ValueError, match="listed twice"):
        CIFAR10(classes=["dog", 5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        CIFAR10(classes=["dog"])
    with pytest.raises(ValueError, match="index 12 is out of range"):
        MNIST(classes=[1, 12])


class Exploit:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_a_pickle_naming_other_globals_is_refused(cifar_dir, tmp_path):
    batch = cifar_dir / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": Exploit(), "labels": [0]}, protocol=2))
    dm = CIFAR10(str(cifar_dir), val_size=10, download=False)
    with pytest.raises(DataError, match=r"data_batch_3 is not a plain CIFAR-10 batch file \(refused to load the "
                                        r"global (posix|nt)\.system"):
        dm.setup()
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_missing_or_corrupt_files_are_clear_errors(cifar_dir, tmp_path):
    with pytest.raises(DataError, match=r"CIFAR-10 files not found in .*empty.*Missing: data_batch_1.*download=False"):
        CIFAR10(str(tmp_path / "empty"), download=False).setup()
    (cifar_dir / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="Missing: test_batch"):
        CIFAR10(str(cifar_dir), val_size=10, download=False).setup()
    make_cifar_dir(cifar_dir)
    batch = cifar_dir / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_2 is truncated or corrupt"):
        CIFAR10(str(cifar_dir), val_size=10, download=False).setup()
    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match="'data' must be a uint8 array"):
        CIFAR10(str(cifar_dir), val_size=10, download=False).setup()


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"Downloading failed: .*name resolution.*Copy the extracted "
                                        r"cifar-10-python.tar.gz there"):
        CIFAR10(str(tmp_path / "none"), download=True).prepare_data()


def test_random_crop_flip_shifts_and_mirrors_each_image():
    x = torch.randn(6, 3, 8, 8)
    out = RandomCropFlip(padding=2, seed=0)(x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):  # each output is one of the 5x5 shifted crops, mirrored or not
        crops = [c for dy in range(5) for dx in range(5) for c in
                 (padded[i, :, dy:dy + 8, dx:dx + 8], padded[i, :, dy:dy + 8, dx:dx + 8].flip(-1))]
        assert any(torch.equal(out[i], c) for c in crops)
    assert not torch.equal(out, x)
    assert torch.equal(RandomCropFlip(padding=2, seed=3)(x), RandomCropFlip(padding=2, seed=3)(x))  # seeded


def test_augment_applies_to_training_batches_only(cifar_dir):
    dm = CIFAR10(str(cifar_dir), val_size=20, batch_size=500, download=False, augment=True)
    assert dm.train_dataloader().augment is not None and dm.val_dataloader().augment is None
    train_x, _ = next(iter(dm.train_dataloader()))
    images, _ = dm.split_tensors("train")
    assert train_x.shape == images.shape and not torch.equal(train_x.sort(0).values, images.sort(0).values)
    val_x, _ = next(iter(dm.val_dataloader()))
    assert torch.allclose(val_x, dm.split_tensors("val")[0], atol=1e-5)


def test_augmentation_is_a_function_of_seed_epoch_and_batch_so_a_resume_is_exact():
    images = torch.arange(40 * 3 * 8 * 8, dtype=torch.int64).remainder(251).to(torch.uint8).view(40, 3, 8, 8)

    def batches(state=None):
        b = TensorBatches(images, torch.arange(40), torch.arange(40), 8, torch.zeros(3), torch.ones(3) / 255,
                          shuffle=True, seed=1)
        b.augment = RandomCropFlip(padding=2, seed=7)
        if state:
            b.load_state_dict(state)
        b.sampler.set_epoch(2)
        return [x for x, _ in b]

    straight = batches()
    resumed = batches({"epoch": 2, "batches_done": 2})  # killed after 2 of the epoch's 5 batches
    assert len(resumed) == 3 and all(torch.equal(a, b) for a, b in zip(straight[2:], resumed))
    crop = RandomCropFlip(padding=2, seed=7)
    x = straight[0]
    assert torch.equal(crop(x, 2, 0), crop(x, 2, 0))  # the same key, the same crops, whatever ran before
    assert not torch.equal(crop(x, 2, 0), crop(x, 3, 0)) and not torch.equal(crop(x, 2, 0), crop(x, 2, 1))
