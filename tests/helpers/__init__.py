"""Shared test helpers; also loaded into CLI subprocesses (`--trainer.callbacks+=helpers.<name>`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE = ["--config", str(REPO / "configs" / "base.yaml")]  # every CLI test starts from the shared defaults


def tiny(mnist_dir: Path, *extra: str) -> list[str]:
    """CLI arguments of a two-epoch run on the test MNIST folder (100 validation examples), logged under ./runs."""
    return [*BASE, "--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--data.download", "false",
            "--trainer.max_epochs", "2", "--trainer.logger.init_args.save_dir", "runs", *extra]
