"""The CIFAR-10 data module on tiny files in the real formats (binary and python): decoding, safety, subsets,
augmentation; and, marked slow, on the real binary files in ../shared/data."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import CIFAR10, MNIST, DataError
from datamodules.cifar10 import BIN_MD5, BIN_URL, RandomCropFlip, read_split
from datamodules.base import TensorBatches

from fake_cifar import NAMES, make_cifar_bin_dir, make_cifar_dir, synthetic_cifar


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
    with pytest.raises(DataError, match=r"CIFAR-10 files not found in .*empty: looked for cifar-10-batches-bin/ .*"
                                        r"cifar-10-batches-py/ does not exist\. download=False"):
        CIFAR10(str(tmp_path / "empty"), download=False).setup()
    (cifar_dir / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="cifar-10-batches-py/ lacks test_batch"):
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

    monkeypatch.setattr("datamodules.location.check_online", lambda url: None)  # reach the download itself
    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"Downloading failed \(.*name resolution.*left as it was.*Copy the "
                                        r"extracted cifar-10-binary.tar.gz there"):
        CIFAR10(str(tmp_path / "none"), download=True).prepare_data()
    assert not (tmp_path / "none").exists()  # the failed attempt removed the folder it would have filled


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


# -- the binary version (cifar-10-batches-bin/): 3,073-byte records, read without unpickling ------------------
SHORT = "ignore:CIFAR-10 .* split in .* records, not the official"  # the tiny fake splits warn; checked below


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    return make_cifar_bin_dir(tmp_path / "cifar")  # 5 x 20 training records, 15 test records


def short_split_warnings(caught: list) -> list[str]:
    return [str(w.message) for w in caught if "not the official" in str(w.message)]


@pytest.mark.filterwarnings(SHORT)
def test_binary_records_round_trip_with_r_plane_first(bin_dir):
    # Record 0 of data_batch_1 built byte by byte: label 7, then R = 0..255 row by row, then G = 255 - R, then B = 9.
    red = np.arange(1024, dtype=np.int64) % 256
    record = bytes([7]) + red.astype(np.uint8).tobytes() + (255 - red).astype(np.uint8).tobytes() + bytes([9] * 1024)
    path = bin_dir / "cifar-10-batches-bin" / "data_batch_1.bin"
    path.write_bytes(record + path.read_bytes()[3073:])
    dm = CIFAR10(str(bin_dir), val_size=0, download=False)
    images, labels = dm._load(train=True)
    assert images.dtype == torch.uint8 and images.shape == (100, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (100,) and labels[0] == 7
    assert images[0, 0, 0, 5] == 5 and images[0, 0, 1, 0] == 32 and images[0, 0, 7, 31] == (7 * 32 + 31) % 256
    assert torch.equal(images[0, 0], torch.from_numpy(red.reshape(32, 32)).to(torch.uint8))
    assert bool((images[0, 1] == 255 - images[0, 0]).all()) and bool((images[0, 2] == 9).all())
    written = [synthetic_cifar(20, seed=10 + i) for i in range(1, 6)]  # every other record, files in order
    data = np.concatenate([d for d, _ in written])[1:]
    assert torch.equal(images[1:], torch.from_numpy(data).view(99, 3, 32, 32))
    assert labels[1:].tolist() == [t for _, truth in written for t in truth][1:]
    test_images, test_labels = dm._load(train=False)
    data, truth = synthetic_cifar(15, seed=10)
    assert torch.equal(test_images, torch.from_numpy(data).view(15, 3, 32, 32)) and test_labels.tolist() == truth
    dm.setup()
    assert (dm.num_examples("train"), dm.num_examples("test"), dm.class_names) == (100, 15, tuple(NAMES))


@pytest.mark.filterwarnings(SHORT)
def test_binary_folder_is_preferred_over_the_python_one(bin_dir):
    make_cifar_dir(bin_dir)  # python folder beside it: 5 x 40 training and 60 test images, other pixels
    dm = CIFAR10(str(bin_dir), val_size=10, download=False)
    dm.setup()
    assert (dm.num_examples("train") + dm.num_examples("val"), dm.num_examples("test")) == (100, 15)
    assert torch.equal(dm._load(train=False)[0], torch.from_numpy(synthetic_cifar(15, seed=10)[0]).view(15, 3, 32, 32))
    (bin_dir / "cifar-10-batches-bin" / "test_batch.bin").unlink()  # an incomplete binary folder is passed over
    assert len(CIFAR10(str(bin_dir), download=False)._load(train=False)[1]) == 60


@pytest.mark.filterwarnings(SHORT)
def test_truncated_or_empty_binary_file_is_a_clear_error(bin_dir):
    path = bin_dir / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[: 5 * 3073 + 100])  # cut in the middle of record 6
    with pytest.raises(DataError, match=r"data_batch_3\.bin is 15,465 bytes, not a whole number of 3,073-byte "
                                        r"records \(5 whole records and 100 bytes over\): it is truncated"):
        CIFAR10(str(bin_dir), val_size=10, download=False).setup()
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"data_batch_3\.bin is empty: it is truncated or corrupt"):
        CIFAR10(str(bin_dir), val_size=10, download=False).setup()


@pytest.mark.filterwarnings(SHORT)
def test_label_byte_outside_0_to_9_is_a_clear_error(bin_dir):
    path = bin_dir / "cifar-10-batches-bin" / "test_batch.bin"
    raw = bytearray(path.read_bytes())
    raw[4 * 3073] = 10  # the label byte of record 4
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"test_batch\.bin: record 4 has label 10, outside 0\.\.9 \(1 such records\), "
                                        r"so it is not a CIFAR-10 file"):
        CIFAR10(str(bin_dir), val_size=10, download=False).setup()


def test_a_short_split_loads_with_one_warning_that_gives_the_count(bin_dir, monkeypatch):
    monkeypatch.setattr("datamodules.cifar10.OFFICIAL_RECORDS", 20)  # as if 20 a file were official: train is full
    dm = CIFAR10(str(bin_dir), val_size=10, download=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.prepare_data()
        dm.setup("fit")
        dm.setup("test")
        next(iter(dm.test_dataloader()))
    assert short_split_warnings(caught) == [
        f"CIFAR-10 test split in {bin_dir / 'cifar-10-batches-bin'} has 15 records, not the official 20 "
        "(test_batch.bin); using them as they are."]
    assert dm.num_examples("test") == 15


def test_wrong_class_names_in_the_meta_file_are_a_clear_error(bin_dir):
    (bin_dir / "cifar-10-batches-bin" / "batches.meta.txt").write_text("\n".join(["plane", *NAMES[1:]]) + "\n")
    with pytest.raises(DataError, match=r"batches\.meta\.txt lists classes \['plane', 'automobile'.*not CIFAR-10's "
                                        r"\['airplane', 'automobile'"):
        CIFAR10(str(bin_dir), val_size=10, download=False).setup()


def test_missing_files_name_both_folders_looked_for(tmp_path, bin_dir):
    with pytest.raises(DataError, match=r"not found in .*nothing: looked for cifar-10-batches-bin/ \(data_batch_1\.\.5"
                                        r"\.bin, test_batch\.bin, batches\.meta\.txt\) and cifar-10-batches-py/ .*; "
                                        r"cifar-10-batches-bin/ does not exist; cifar-10-batches-py/ does not exist\. "
                                        r"download=False, so nothing was fetched"):
        CIFAR10(str(tmp_path / "nothing"), download=False).prepare_data()
    (bin_dir / "cifar-10-batches-bin" / "batches.meta.txt").unlink()
    with pytest.raises(DataError, match="cifar-10-batches-bin/ lacks batches.meta.txt; cifar-10-batches-py/ does not"):
        CIFAR10(str(bin_dir), download=False).setup()


@pytest.mark.filterwarnings(SHORT)
def test_download_fetches_the_binary_archive(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, filename, md5))
        make_cifar_bin_dir(Path(download_root))

    monkeypatch.setattr("datamodules.location.check_online", lambda url: None)  # a network, as far as it knows
    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", fake_download)
    dm = CIFAR10(str(tmp_path / "fresh"), val_size=10, download=True)
    dm.prepare_data()
    dm.setup()
    assert calls == [(BIN_URL, "cifar-10-binary.tar.gz", BIN_MD5)] and dm.num_examples("test") == 15
    assert BIN_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert BIN_MD5 == "c32a1d4ab5d03f1284b67883e8d87530"


@pytest.mark.slow
def test_real_binary_cifar10(real_cifar):
    dm = CIFAR10(str(real_cifar), download=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels = dm._load(train=True)
        test_images, test_labels = dm._load(train=False)
    # The shared test split is the first 1,000 of the official 10,000 images: one warning, for it alone.
    assert [m.split(" in ")[0] for m in short_split_warnings(caught)] == ["CIFAR-10 test split"]
    assert "has 1,000 records, not the official 10,000" in short_split_warnings(caught)[0]
    assert images.shape == (50_000, 3, 32, 32) and test_images.shape == (1000, 3, 32, 32)
    assert torch.bincount(test_labels, minlength=10).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    assert torch.bincount(labels, minlength=10).tolist() == [5000] * 10
    sums = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(2000):  # float copies of 2,000 images at a time, not of all 50,000
        sums += chunk.float().sum(dim=(0, 2, 3)).double()
    mean = sums / (len(images) * 32 * 32 * 255)
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=1e-3), mean
