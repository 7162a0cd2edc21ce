"""The run record (runtime/run_record.py): one owner of results.json, filled by the RunRecord callback through
Lightning's public hooks, so a plain Trainer records what `litlab fit` does."""

from __future__ import annotations

import json
import signal

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

from datamodules import MNISTSubset
from lit_models import MLP, Classifier
from runtime import run_record
from runtime.run_record import RunRecord


class FailAtStep(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 3:
            raise RuntimeError("a bug at step 3")


def plain_trainer(tmp_path, *callbacks: L.Callback) -> L.Trainer:
    return L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=CSVLogger(str(tmp_path)),
                     callbacks=[RunRecord(), *callbacks], enable_progress_bar=False, enable_model_summary=False)


def data() -> MNISTSubset:
    return MNISTSubset(train_size=200, val_size=100, batch_size=50)


def model() -> Classifier:
    return Classifier(net=lambda shape, k: MLP(shape, k, hidden=[16]), optimizer="adam", lr=1e-2)


def test_a_plain_trainer_with_the_callback_records_finished_with_the_test_metrics(tmp_path):
    trainer = plain_trainer(tmp_path)
    trainer.fit(model(), data())
    record = run_record.read(trainer.log_dir)
    assert record["status"] == "finished" and record["epochs"] == 2 and record["global_step"] == 8
    assert record["best_checkpoint"].endswith(".ckpt") and "test/acc" not in record
    assert record["val/acc"] == round(float(trainer.callback_metrics["val/acc"]), 6)
    trainer.test(datamodule=data(), ckpt_path="best")
    record = json.loads((tmp_path / "lightning_logs" / "version_0" / "results.json").read_text())
    assert record["status"] == "finished" and record["fit_seconds"] > 0  # the fit's record, now with test/*
    assert record["test/acc"] == round(float(trainer.callback_metrics["test/acc"]), 6) and "val/acc" in record


def test_a_test_without_fit_is_tested_and_an_exception_is_failed(tmp_path):
    trainer = plain_trainer(tmp_path / "t")
    trainer.test(model(), data())
    record = run_record.read(trainer.log_dir)
    assert record["status"] == "tested" and record["test/acc"] == round(float(trainer.callback_metrics["test/acc"]), 6)
    trainer = plain_trainer(tmp_path / "f", FailAtStep())
    with pytest.raises(RuntimeError, match="a bug at step 3"):
        trainer.fit(model(), data())
    record = run_record.read(trainer.log_dir)
    assert record == {**record, "status": "failed", "message": "RuntimeError: a bug at step 3", "global_step": 3}


def test_write_refuses_an_unknown_status_and_mark_killed_keeps_what_was_there(tmp_path):
    with pytest.raises(ValueError, match="'done' is not one of running, finished"):
        run_record.write(tmp_path, {"status": "done"})
    assert not run_record.path(tmp_path).exists()  # nothing half-written
    run_record.write(tmp_path, {"status": "running", "epochs": 1, "global_step": 7})
    record = run_record.mark_killed(tmp_path, signal.SIGKILL)
    assert run_record.read(tmp_path) == record
    assert record["status"] == "killed" and record["global_step"] == 7 and "SIGKILL" in record["message"]
    assert run_record.read(tmp_path / "nowhere") == {} and run_record.status(tmp_path / "nowhere") == "missing"
