from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from conftest import make_mnist_dir, synthetic_digits, write_idx
from datamodules import MNIST, DataError, FashionMNIST, MNISTSubset, TensorBatches
from datamodules.mnist import read_idx


def test_read_idx_roundtrip_plain_and_gz(tmp_path):
    images, _ = synthetic_digits(7, seed=3)
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        write_idx(tmp_path / name, images)
        assert torch.equal(read_idx(tmp_path / name), torch.from_numpy(images))


def test_mnist_shapes_split_and_normalisation(mnist_dir):
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, batch_size=32, download=False)
    dm.setup()
    assert (dm.num_classes, dm.input_shape) == (10, (1, 28, 28))
    assert [dm.num_examples(s) for s in ("train", "val", "test")] == [500, 100, 200]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    # On-the-fly normalisation equals (u8 / 255 - mean) / std.
    xs, ys = dm.split_tensors("test")
    raw, labels = synthetic_digits(200, seed=1)
    expected = (torch.from_numpy(raw).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    assert torch.allclose(xs, expected, atol=1e-5) and torch.equal(ys, torch.from_numpy(labels).long())
    x_val, _ = next(iter(dm.val_dataloader()))
    assert torch.allclose(x_val, dm.split_tensors("val")[0][: len(x_val)], atol=1e-5)


def test_split_is_seeded_disjoint_and_train_size_subsets(mnist_dir):
    def split(seed, train_size=None):
        dm = MNIST(data_dir=str(mnist_dir), val_size=100, seed=seed, train_size=train_size, download=False)
        dm.setup()
        return [dm._splits[s][0].flatten(1) for s in ("train", "val")]

    (tr0, va0), (tr0b, va0b), (tr1, va1) = split(0), split(0), split(1)
    assert torch.equal(tr0, tr0b) and torch.equal(va0, va0b)
    assert not torch.equal(va0, va1)
    seen_val = {row.numpy().tobytes() for row in va0}
    assert not any(row.numpy().tobytes() in seen_val for row in tr0)  # no val image leaks into train
    small, _ = split(0, train_size=50)
    assert len(small) == 50


def test_train_size_too_large_is_a_clear_error(mnist_dir):
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, train_size=501, download=False)
    with pytest.raises(ValueError, match="train_size=501 is larger than the 500"):
        dm.setup()


def test_shuffle_is_seeded_per_epoch_and_shards_cover_everything():
    images = torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1)
    labels = torch.arange(103)

    def epoch(rank, world, e, seed=0):
        b = TensorBatches(images, labels, torch.arange(103), 10, torch.zeros(1), torch.ones(1) / 255,
                          shuffle=True, seed=seed, rank=rank, world_size=world)
        b.sampler.set_epoch(e)
        return torch.cat([y for _, y in b]), len(b)

    assert torch.equal(epoch(0, 1, 0)[0], epoch(0, 1, 0)[0])
    assert not torch.equal(epoch(0, 1, 0)[0], epoch(0, 1, 1)[0])
    assert sorted(epoch(0, 1, 3)[0].tolist()) == list(range(103))
    shards = [epoch(r, 2, 5) for r in range(2)]
    assert len(shards[0][0]) == len(shards[1][0]) == 52 and shards[0][1] == shards[1][1]  # equal, padded
    assert set(torch.cat([s for s, _ in shards]).tolist()) == set(range(103))
    # Evaluation shards are exact: every example exactly once.
    evals = [torch.cat([y for _, y in TensorBatches(images, labels, torch.arange(103), 10, torch.zeros(1),
                                                      torch.ones(1), shuffle=False, rank=r, world_size=2)])
             for r in range(2)]
    assert sorted(torch.cat(evals).tolist()) == list(range(103))


def test_missing_files_offline_say_where_to_put_them(tmp_path):
    dm = MNIST(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError, match=r"MNIST files not found in .*nowhere/MNIST/raw.*MNISTSubset"):
        dm.setup()


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(self, train):
        raise OSError("network is unreachable")

    monkeypatch.setattr(FashionMNIST, "_torchvision_download", offline)
    with pytest.raises(DataError, match=r"Downloading failed \(network is unreachable\)"):
        FashionMNIST(data_dir=str(tmp_path)).prepare_data()


def test_truncated_and_corrupt_files_are_named(tmp_path):
    root = make_mnist_dir(tmp_path)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is truncated or corrupt"):
        MNIST(data_dir=str(root), download=False, val_size=10).setup()
    images.write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is corrupt"):
        MNIST(data_dir=str(root), download=False, val_size=10).setup()


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    root = make_mnist_dir(tmp_path, folder="FashionMNIST")
    dm = FashionMNIST(data_dir=str(root), download=False, val_size=100)
    dm.setup()
    assert dm.class_names[9] == "Ankle boot" and dm.num_examples("test") == 200


def test_embedded_subset_is_real_mnist():
    dm = MNISTSubset()
    dm.setup()
    assert [dm.num_examples(s) for s in ("train", "val", "test")] == [5000, 1000, 1000]
    _, y = dm.split_tensors("train")
    counts = np.bincount(y.numpy(), minlength=10)
    assert counts.min() > 350  # every digit is there, roughly balanced
