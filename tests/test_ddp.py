"""Two CPU processes (gloo, ddp_spawn): each rank trains on its own shard and the run completes."""

from __future__ import annotations

import csv

import lightning as L
import torch

from callbacks import ConfusionMatrix

from datamodules import MNIST
from lit_models import Classifier


class RecordShard(L.Callback):
    """Saves the labels each rank trained on in epoch 0, so the test can check the shards."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch[0].flatten(1).sum(1))  # a fingerprint of each image

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            torch.save(torch.cat(self.seen), f"{self.out}/rank{trainer.global_rank}.pt")


def test_two_process_ddp_fit(mnist_dir, tmp_path):
    L.seed_everything(0)
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, batch_size=25, download=False)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path),
                        callbacks=[RecordShard(str(tmp_path)), ConfusionMatrix(stages=("train", "val"))])
    model = Classifier(optimizer="adam", lr=3e-3)
    trainer.fit(model, dm)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert len(r0) == len(r1) == 250  # 500 training images, split evenly
    dm.setup()
    everything = dm.split_tensors("train")[0].flatten(1).sum(1)
    # The two shards together cover the training split (fingerprints match up to float error).
    both = torch.cat([r0, r1]).sort().values
    assert torch.allclose(both, everything.sort().values, atol=1e-2)
    assert trainer.callback_metrics["val/acc"] > 0.8
    # Confusion matrices are summed over both ranks before rank zero writes them: every example counted once.
    for stage, n in (("train", 500), ("val", 100)):
        with open(tmp_path / "figures" / f"confusion_{stage}.csv") as f:
            assert sum(int(r["count"]) for r in csv.DictReader(f)) == n
