"""Shared test helpers; also loaded into CLI subprocesses (`--trainer.callbacks+=helpers.<name>`)."""

import hashlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE = ["--config", str(REPO / "configs" / "base.yaml")]  # every CLI test starts from the shared defaults


def tiny(mnist_dir: Path, *extra: str) -> list[str]:
    """CLI arguments of a two-epoch run on the test MNIST folder (100 validation examples), logged under ./runs."""
    return [*BASE, "--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--data.download", "false",
            "--trainer.max_epochs", "2", "--trainer.logger.init_args.save_dir", "runs", *extra]


# A one-epoch fit of a small MLP, quiet: the reliability tests' run whose files must survive a bad command.
FIT = [*BASE, "--data.val_size", "100", "--data.download", "false", "--data.batch_size", "64",
       "--model.net.hidden", "[16]", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
       "--trainer.enable_model_summary", "false"]


def tree_hash(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones too) -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
