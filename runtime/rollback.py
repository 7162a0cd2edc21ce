"""A resume that fails leaves its run directory exactly as it was.

Resuming writes into the run it continues (one run, one directory): Lightning rewrites `config.yaml`, the CSV
logger empties `metrics.csv`, litlab marks `results.json` running and refreshes checkpoints. If the resume then
fails (a bad argument met late, a full disk, a file-size limit, a bug), those writes would leave a finished run
half overwritten. So before the first write the run directory is copied beside itself, and on failure the
copy is switched back in with two renames (which need no free space):

    runs/quickstart/version_0/            the run, written by the resume
    runs/quickstart/.version_0.before-resume/   its state before the resume; removed when the resume succeeds

Checkpoints are hard-linked rather than copied: litlab writes them only by renaming a new file over the old
(`AtomicCheckpointIO`) and Lightning removes them with unlink, so a link keeps the old bytes at no cost. Every
other file is copied, because loggers write some of them in place. A resume killed outright (SIGKILL) keeps
its progress, like any killed run; the next resume of that run replaces the stale copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class RunSnapshot:
    """The state of a run directory before a resume writes into it: `take`, then `discard` or `restore`."""

    def __init__(self, run: Path) -> None:
        self.run = Path(run)
        self.copy = self.run.with_name(f".{self.run.name}.before-resume")

    def take(self) -> None:
        """Copy the run directory aside. Raises OSError (nothing of the run touched) if that fails."""
        shutil.rmtree(self.copy, ignore_errors=True)  # a copy left by a resume that was killed
        try:
            shutil.copytree(self.run, self.copy, copy_function=_link_checkpoints)
        except BaseException:
            shutil.rmtree(self.copy, ignore_errors=True)
            raise

    def discard(self) -> None:
        shutil.rmtree(self.copy, ignore_errors=True)

    def restore(self) -> None:
        """Put the run directory back as it was before `take` (renames, then removal of the failed attempt)."""
        failed = self.run.with_name(f".{self.run.name}.failed-resume")
        shutil.rmtree(failed, ignore_errors=True)
        os.replace(self.run, failed)
        os.replace(self.copy, self.run)
        shutil.rmtree(failed, ignore_errors=True)


def _link_checkpoints(src: str, dst: str) -> None:
    if src.endswith(".ckpt"):
        try:
            os.link(src, dst)
            return
        except OSError:  # a file system without hard links: copy
            pass
    shutil.copy2(src, dst)
