"""Tiny Lightning runs for callback tests: a quiet CPU trainer and a module that logs scripted values."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def trainer(tmp: Path | str = "runs", **kwargs) -> L.Trainer:
    kwargs = {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
              "enable_model_summary": False, "enable_checkpointing": False, "log_every_n_steps": 1, **kwargs}
    return L.Trainer(logger=CSVLogger(str(tmp)), **kwargs)



class Scripted(L.LightningModule):
    """Logs `values[epoch]` as val/loss after each epoch's validation; trains a throwaway linear layer."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values, self.layer = values, nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", torch.tensor(float(self.values[self.current_epoch])))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(2, 2)), batch_size=2)

    val_dataloader = train_dataloader
