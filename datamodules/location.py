"""Where data comes from, and downloads that leave nothing behind when they fail.

One rule (stated once in the README): `data.data_dir` when given, else `$LITLAB_DATA`, else the user cache folder
`$XDG_CACHE_HOME/litlab` (`~/.cache/litlab`), where missing files are downloaded. A path relative to wherever
the user happens to stand is never a default.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

# Every folder layout litlab reads, relative to the data folder, and what each holds (for "not found" messages).
LAYOUTS = {
    "MNIST/raw": "MNIST (train-images-idx3-ubyte, ... plain or .gz)",
    "FashionMNIST/raw": "Fashion-MNIST (same file names as MNIST)",
    "cifar-10-batches-bin": "CIFAR-10, binary version",
    "cifar-10-batches-py": "CIFAR-10, python version",
}


def default_data_dir() -> str:
    """`$LITLAB_DATA`, else `$XDG_CACHE_HOME/litlab` (`~/.cache/litlab`)."""
    if os.environ.get("LITLAB_DATA"):
        return os.environ["LITLAB_DATA"]
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "litlab")


def found_layouts(root: Path) -> str:
    """What `root` holds of the layouts litlab reads, and loose MNIST-format files outside them, in a few words."""
    if not root.is_dir():
        return f"{root} does not exist"
    found = [f"{name}/ ({what})" for name, what in LAYOUTS.items() if (root / name).is_dir()]
    # IDX files one or two levels too high (e.g. <root>/MNIST/*.gz without raw/, or <root>/*.gz): a common copy slip.
    loose = sorted(str(p.relative_to(root)) for pattern in ("*-ubyte*", "*/*-ubyte*") for p in root.glob(pattern))
    found += [f"{p} (not under <dataset>/raw/)" for p in loose[:4]] + (["..."] if len(loose) > 4 else [])
    return f"{root} holds " + ("; ".join(found) if found else "none of them")


def check_online(url: str, timeout: float = 3.0) -> None:
    """One quick connection to `url`'s host, so an offline machine fails in seconds, not after the retries of
    every mirror. Raises OSError with the reason."""
    host = urlparse(url).hostname or url
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        raise OSError(f"no network: could not reach {host} ({err})") from err


def _snapshot(root: Path) -> set[Path]:
    return {Path(d) / n for d, dirs, files in os.walk(root) for n in (*dirs, *files)} if root.is_dir() else set()


@contextmanager
def undo_on_failure(root: Path) -> Iterator[None]:
    """Run a download; if it raises, remove every file and folder it created under `root` (and `root` and its
    parents if it made them), so a failed attempt leaves a shared data folder exactly as it was."""
    root = Path(root).absolute()
    top = root  # the highest folder that does not exist yet: removing it undoes every mkdir of the download
    while not top.parent.exists():
        top = top.parent
    made_root = not top.exists()
    before = _snapshot(root)
    try:
        yield
    except BaseException:
        if made_root:
            shutil.rmtree(top, ignore_errors=True)
        else:
            # Deepest first, so a new folder is empty (or removed whole) before its parent is looked at.
            for path in sorted(_snapshot(root) - before, key=lambda p: len(p.parts), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def download(fetch: Callable[[], None], root: Path, url: str) -> None:
    """`fetch()` after a quick network check, undone under `root` if it fails."""
    with undo_on_failure(root):
        check_online(url)
        fetch()
