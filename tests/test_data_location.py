"""Where data comes from ($LITLAB_DATA, then the user cache), and failed downloads that leave no trace."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from datamodules import MNIST, DataError
from datamodules.location import default_data_dir


def listing(root: Path) -> list[str]:
    return sorted(str(Path(d, n).relative_to(root)) for d, dirs, files in os.walk(root) for n in (*dirs, *files))


def test_data_dir_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("LITLAB_DATA", str(tmp_path / "shared"))
    assert MNIST().data_dir == str(tmp_path / "shared")
    assert MNIST(data_dir=str(tmp_path / "given")).data_dir == str(tmp_path / "given")  # an explicit folder wins
    monkeypatch.delenv("LITLAB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == str(tmp_path / "cache" / "litlab")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert MNIST().data_dir == str(tmp_path / "home" / ".cache" / "litlab")


def test_offline_download_fails_fast_and_leaves_no_folder(tmp_path, monkeypatch):
    attempts = []

    def unreachable(address, timeout):
        attempts.append(address)
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("socket.create_connection", unreachable)
    target = tmp_path / "cache" / "litlab"  # neither folder exists yet
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"Downloading failed \(no network: could not reach .*name resolution\)"):
        MNIST(data_dir=str(target)).prepare_data()
    assert time.perf_counter() - start < 2 and len(attempts) == 1  # one attempt, not every mirror's retries
    assert not (tmp_path / "cache").exists()


def test_failed_download_removes_only_what_it_created(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "cifar-10-batches-bin").mkdir(parents=True)
    (shared / "notes.txt").write_text("the team's")
    before = listing(shared)

    def partial_download(*args, **kwargs):  # what torchvision leaves when a mirror drops mid-file
        raw = shared / "MNIST" / "raw"
        raw.mkdir(parents=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b partial")
        (shared / "notes.txt").write_text("the team's")  # a file that was there is kept, not removed
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    partial_download.mirrors = ["https://ossci-datasets.s3.amazonaws.com/mnist/"]  # torchvision's class attribute
    monkeypatch.setattr("datamodules.location.check_online", lambda url: None)
    monkeypatch.setattr("torchvision.datasets.MNIST", partial_download)
    with pytest.raises(DataError, match="Error downloading train-images.*left as it was"):
        MNIST(data_dir=str(shared)).prepare_data()
    assert listing(shared) == before and (shared / "notes.txt").read_text() == "the team's"


def test_missing_data_names_the_layouts_read_and_what_was_found(tmp_path):
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST").mkdir()
    (tmp_path / "MNIST" / "train-images-idx3-ubyte.gz").write_bytes(b"")  # copied one level too high
    with pytest.raises(DataError) as err:
        MNIST(data_dir=str(tmp_path), download=False).setup()
    message = str(err.value)
    assert "litlab reads MNIST/raw/, FashionMNIST/raw/, cifar-10-batches-bin/, cifar-10-batches-py/" in message
    assert "holds FashionMNIST/raw/ (Fashion-MNIST" in message
    assert "MNIST/train-images-idx3-ubyte.gz (not under <dataset>/raw/)" in message
    assert "cifar-10" not in message.split("holds")[1]  # no CIFAR folder here, so none is reported found
