"""DivergenceGuard on an accelerator: losses stay on the device between reads (`sync_every`), a bad one is reported
with its own step, and no checkpoint is written while a bad loss is pending. Simulated on a CPU by forcing
`sync_every` > 1 (a GPU would only change where the tensors live)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from callbacks.training.divergence import Diverged, DivergenceGuard
from cli import cli_main
from helpers import BASE
from helpers.faults import NaNAtStep

NAN = math.nan


class FakeTrainer:  # the things the guard reads during training
    global_step, current_epoch, world_size = 0, 0, 1
    optimizers = [torch.optim.SGD([torch.zeros(1)], lr=0.5)]


def feed(guard: DivergenceGuard, trainer: FakeTrainer, step: int, loss: float, epoch: int = 0) -> None:
    trainer.global_step, trainer.current_epoch = step, epoch
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)


def test_a_nan_inside_a_sync_window_is_read_once_and_reported_with_its_own_step(monkeypatch):
    reads = []  # every way a tensor reaches the host as a Python number
    for name in ("tolist", "item", "__float__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda t, *a, _real=real, _name=name: reads.append(_name) or _real(t, *a))
    guard, trainer = DivergenceGuard(sync_every=8), FakeTrainer()
    for step, loss in enumerate([2.3, 2.1, 1.9, 1.8, NAN, NAN, NAN], start=1):
        feed(guard, trainer, step, loss, epoch=0 if step <= 5 else 1)
    assert reads == [] and len(guard.pending) == 7 and not guard.diverged  # no sync yet, nothing dropped
    with pytest.raises(Diverged, match=r"step 5 \(epoch 0, learning rate 0.5\): the training loss became nan"):
        feed(guard, trainer, 8, NAN, epoch=1)
    assert reads == ["tolist"]  # the eight losses in one read
    assert guard.diverged and guard.report["step"] == 5 and guard.report["epoch"] == 0 and guard.pending == []


def test_an_explosion_inside_a_window_is_judged_against_the_losses_before_it():
    guard, trainer = DivergenceGuard(factor=10, window=5, warmup_steps=3, sync_every=4), FakeTrainer()
    for step, loss in enumerate([2.0, 1.5, 1.2, 1.0, 0.9, 50.0, 1.0], start=1):
        feed(guard, trainer, step, loss)
    assert guard.recent == pytest.approx([2.0, 1.5, 1.2, 1.0])  # the first window read; the second still pending
    # The median of the five losses before step 6 (0.9 included, read in the same window) is 1.2, not 1.35.
    with pytest.raises(Diverged, match=r"step 6 .*jumped to 50, more than 10 × its running median 1.2\b"):
        feed(guard, trainer, 8, 1.0)


def trainer_for(tmp_path: Path, *callbacks: L.Callback, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, callbacks=list(callbacks), **kwargs)


class Tiny(L.LightningModule):
    """A linear classifier on 16 random examples in batches of 4: 4 steps an epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.validated = torch.nn.Linear(4, 2), []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.validated.append(self.trainer.global_step)
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)),
                          batch_size=4)

    val_dataloader = train_dataloader


class SaveAt(L.Callback):
    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


@pytest.mark.parametrize("saver", ["every_3_steps", "save_checkpoint"])
def test_a_checkpoint_requested_while_a_nan_is_pending_is_never_written(tmp_path, saver):
    # NaN weights after step 5, so the loss of step 6 is NaN; the guard would read it only at step 10.
    ckpts = tmp_path / "ckpts"
    save = (ModelCheckpoint(dirpath=ckpts, filename="{step}", every_n_train_steps=3, save_top_k=-1)
            if saver == "every_3_steps" else SaveAt(7, ckpts / "manual.ckpt"))
    trainer = trainer_for(tmp_path, NaNAtStep(5), DivergenceGuard(sync_every=10), save, max_steps=20,
                          limit_val_batches=0, enable_checkpointing=saver == "every_3_steps")
    with pytest.raises(Diverged, match=r"diverged at step 6 .*became nan"):
        trainer.fit(Tiny())
    assert trainer.global_step == (6 if saver == "every_3_steps" else 7)  # stopped at the save, not at step 10
    written = sorted(p.name for p in ckpts.iterdir()) if ckpts.exists() else []
    assert written == (["step=3.ckpt"] if saver == "every_3_steps" else [])
    for name in written:
        ckpt = torch.load(ckpts / name, weights_only=True)
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())
        # The guard's saved window holds the three losses read at this save (a resume continues its median).
        assert [len(s["recent"]) for k, s in ckpt["callbacks"].items() if k.startswith("DivergenceGuard")] == [3]


def test_a_pending_nan_is_read_before_validation_and_at_train_end(tmp_path):
    # Validation each epoch (4 steps) with a validation-triggered ModelCheckpoint: the NaN of step 6 stops the run
    # before epoch 1's validation judges NaN weights and its checkpoint is written.
    model, ckpts = Tiny(), tmp_path / "ckpts"
    save = ModelCheckpoint(dirpath=ckpts, filename="{step}", monitor="val_loss", save_top_k=-1,
                           save_on_train_epoch_end=False)
    trainer = trainer_for(tmp_path, NaNAtStep(5), DivergenceGuard(sync_every=100), save, max_epochs=5,
                          num_sanity_val_steps=0)
    with pytest.raises(Diverged, match="step 6 "):
        trainer.fit(model)
    assert set(model.validated) == {4} and sorted(p.name for p in ckpts.iterdir()) == ["step=4.ckpt"]
    # A NaN in the last steps before max_steps, with no save or validation after it, is still reported.
    trainer = trainer_for(tmp_path, NaNAtStep(5), DivergenceGuard(sync_every=100), max_steps=7, limit_val_batches=0,
                          enable_checkpointing=False)
    with pytest.raises(Diverged, match="step 6 "):
        trainer.fit(Tiny())


def test_the_cpu_default_checks_every_step_and_an_accelerator_defaults_to_50(tmp_path):
    guard = DivergenceGuard()
    trainer = trainer_for(tmp_path, NaNAtStep(5), guard, max_steps=20, limit_val_batches=0, enable_checkpointing=False)
    with pytest.raises(Diverged, match="step 6 "):
        trainer.fit(Tiny())
    assert trainer.global_step == 6 and guard.reads_every == 1  # stopped at the NaN's own step
    cuda = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda")), checkpoint_callbacks=[])
    guard.setup(cuda, None, "fit")
    assert guard.reads_every == 50
    # A weights-only checkpoint skips on_save_checkpoint, where a pending NaN is caught: read every step.
    cuda.checkpoint_callbacks = [ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)]
    guard.setup(cuda, None, "fit")
    assert guard.reads_every == 1
    with pytest.raises(ValueError, match="sync_every 8 needs full checkpoints"):
        DivergenceGuard(sync_every=8).setup(cuda, None, "fit")
    with pytest.raises(ValueError, match="sync_every >= 1"):
        DivergenceGuard(sync_every=0)


def test_the_cli_run_with_deferred_reads_records_the_nan_step_and_keeps_last_from_before_it(mnist_dir):
    # 16 steps an epoch; last.ckpt every 3 steps; NaN weights after step 20, so the loss of step 21 is NaN, read at
    # the save of step 21 (not at the next read, step 30), which is therefore never written.
    argv = ["fit", *BASE, "--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--data.download", "false",
            "--data.batch_size", "32", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
            "--model.net.hidden", "[16]", "--divergence.sync_every", "10", "--checkpoint.save_last_every_n_steps", "3",
            "--trainer.callbacks+=helpers.faults.NaNAtStep", "--trainer.callbacks.step", "20"]
    with pytest.raises(SystemExit, match=r"^litlab: training diverged at step 21 \(epoch 1"):
        cli_main(argv)
    run = Path("runs/default/version_0")
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "diverged" and results["step"] == 21 and results["epoch"] == 1
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 18
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU check's machine)")
def test_on_cuda_the_steps_between_reads_never_sync_the_device():
    guard, trainer = DivergenceGuard(), FakeTrainer()
    trainer.strategy, trainer.checkpoint_callbacks = SimpleNamespace(root_device=torch.device("cuda")), []
    guard.setup(trainer, None, "fit")
    losses = torch.full((50,), 2.0, device="cuda")
    losses[9] = NAN  # step 10
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device->host sync raises
    try:
        for step in range(1, 50):
            trainer.global_step = step
            guard.on_train_batch_end(trainer, None, {"loss": losses[step - 1]}, None, 0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(guard.pending) == 49
    trainer.global_step = 50
    with pytest.raises(Diverged, match="step 10 "):
        guard.on_train_batch_end(trainer, None, {"loss": losses[49]}, None, 0)


def test_a_checkpoint_of_weights_the_last_update_made_non_finite_is_never_written(tmp_path):
    # NaN weights after step 4, saved at that same step: every loss read so far was finite (it came before the
    # update), so only a look at the weights themselves can refuse the file.
    class NaNThenSave(NaNAtStep):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            super().on_train_batch_end(trainer, pl_module, *args)
            if trainer.global_step == self.step:
                trainer.save_checkpoint(tmp_path / "at_nan.ckpt")

    trainer = trainer_for(tmp_path, DivergenceGuard(), NaNThenSave(4), max_steps=8, limit_val_batches=0,
                          enable_checkpointing=False)
    with pytest.raises(Diverged, match=r"diverged at step 4 .*weights became non-finite"):
        trainer.fit(Tiny())
    assert not (tmp_path / "at_nan.ckpt").exists()
    # Finite weights save as before (the check is not a blanket refusal).
    trainer = trainer_for(tmp_path, DivergenceGuard(), SaveAt(2, tmp_path / "fine.ckpt"), max_steps=3,
                          limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(Tiny())
    assert (tmp_path / "fine.ckpt").is_file()
