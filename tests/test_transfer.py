"""Transfer: encoder checkpoints → linear probe / fine-tune / scratch, freezing, clear errors for bad weights."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.training.finetuning import EncoderFinetuning
from cli import cli_main
from conftest import REPO
from datamodules import MNIST
from helpers import BASE, tiny
from lit_models import MLP, Classifier
from lit_models.checkpointing import CheckpointMismatch
from lit_models.nets.transfer import EncoderClassifierNet, ResNet18, WeightsUnavailable


def bn_encoder(shape, dim):
    return MLP(shape, dim, hidden=[32], batch_norm=True)


def saved_encoder(tmp_path: Path) -> Path:
    """A Classifier-style checkpoint whose `net.*` is a batch-norm MLP encoder with non-trivial BN statistics."""
    enc = bn_encoder((1, 28, 28), 8)
    enc.train()
    with torch.no_grad():
        enc(torch.randn(64, 1, 28, 28) * 3 + 1)  # moves the running mean/var away from 0/1
    path = tmp_path / "encoder.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in enc.state_dict().items()},
                "hyper_parameters": {"_class_path": "lit_models.modules.triplet.TripletEncoder", "embedding_dim": 8}}, path)
    return path


class Snapshots(L.Callback):
    """Copies of the encoder's state (parameters and BN buffers) after every training epoch."""

    def __init__(self):
        self.states, self.groups, self.heads = [], [], []

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append({k: v.clone() for k, v in pl_module.net.encoder.state_dict().items()})
        self.groups.append([g["lr"] for g in trainer.optimizers[0].param_groups])
        self.heads.append(pl_module.net.head.weight.detach().clone())


def fit(mnist_dir: Path, ckpt: Path, callback: EncoderFinetuning, epochs: int = 2) -> tuple[Classifier, Snapshots]:
    L.seed_everything(0)
    net = lambda shape, n: EncoderClassifierNet(shape, n, encoder=bn_encoder, embedding_dim=8, checkpoint=str(ckpt))
    model = Classifier(net=net, optimizer="adam", lr=0.01)
    snaps = Snapshots()
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback, snaps], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, MNIST(str(mnist_dir), val_size=100, download=False))
    return model, snaps


def test_linear_probe_freezes_encoder_weights_and_batchnorm_statistics(mnist_dir, tmp_path):
    ckpt = saved_encoder(tmp_path)
    pretrained = {k[4:]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}
    model, snaps = fit(mnist_dir, ckpt, EncoderFinetuning(mode="linear_probe"))
    for state in snaps.states:  # every epoch: parameters and running_mean/var exactly the pretrained ones
        for k, v in pretrained.items():
            assert torch.equal(state[k], v), k
    enc = model.net.encoder
    assert all(not p.requires_grad and p.grad is None for p in enc.parameters())
    assert not enc[2].training  # the BatchNorm1d normalises with its (frozen) running statistics
    assert all(len(g) == 1 for g in snaps.groups)  # the optimiser holds the head only
    assert not torch.equal(snaps.heads[0], snaps.heads[1])  # while the head learns


def test_finetune_trains_the_encoder_after_warm_up_at_a_scaled_learning_rate(mnist_dir, tmp_path):
    ckpt = saved_encoder(tmp_path)
    pretrained = {k[4:]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}
    _, snaps = fit(mnist_dir, ckpt, EncoderFinetuning(mode="finetune", unfreeze_at_epoch=1, backbone_lr_scale=0.1))
    assert all(torch.equal(snaps.states[0][k], v) for k, v in pretrained.items())  # warm-up epoch: frozen
    assert not torch.equal(snaps.states[1]["1.weight"], pretrained["1.weight"])  # then trained
    assert not torch.equal(snaps.states[1]["2.running_mean"], pretrained["2.running_mean"])  # BN stats too
    assert snaps.groups[0] == [0.01] and snaps.groups[1] == pytest.approx([0.01, 0.001])


def test_finetune_resumed_after_unfreezing_keeps_training_the_encoder(mnist_dir, tmp_path):
    ckpt = saved_encoder(tmp_path)
    net = lambda shape, n: EncoderClassifierNet(shape, n, encoder=bn_encoder, embedding_dim=8, checkpoint=str(ckpt))

    def trainer(epochs, snaps):
        return L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[EncoderFinetuning("finetune", 1, 0.1), snaps])

    first = trainer(2, Snapshots())
    first.fit(Classifier(net=net, optimizer="adam", lr=0.01), MNIST(str(mnist_dir), val_size=100, download=False))
    last = first.checkpoint_callback.best_model_path
    snaps = Snapshots()
    model = Classifier(net=net, optimizer="adam", lr=0.01)
    trainer(3, snaps).fit(model, MNIST(str(mnist_dir), val_size=100, download=False), ckpt_path=last)
    assert snaps.groups == [pytest.approx([0.01, 0.001])]  # the restored groups, no duplicate added
    assert all(p.requires_grad for p in model.net.encoder.parameters()) and model.net.encoder.training
    saved = torch.load(last, weights_only=True)["state_dict"]
    assert not torch.equal(snaps.states[0]["1.weight"], saved["net.encoder.1.weight"])  # still learning


def test_scratch_reinitialises_the_encoder(mnist_dir, tmp_path):
    ckpt = saved_encoder(tmp_path)
    pretrained = {k[4:]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}
    model, snaps = fit(mnist_dir, ckpt, EncoderFinetuning(mode="scratch"), epochs=1)
    assert snaps.groups[0] == [0.01] and all(p.requires_grad for p in model.parameters())
    # A fresh BatchNorm starts at mean 0 / var 1: one epoch of MNIST batches is far from the saved statistics.
    assert not torch.allclose(snaps.states[0]["2.running_mean"], pretrained["2.running_mean"], atol=0.1)


def test_classifier_checkpoint_as_encoder_drops_its_output_layer(tmp_path):
    clf = Classifier(net=lambda s, n: MLP(s, n, hidden=[16]), num_classes=8)
    path = tmp_path / "clf.ckpt"
    torch.save({"state_dict": clf.state_dict()}, path)
    net = EncoderClassifierNet((1, 28, 28), 2, encoder=lambda s, n: MLP(s, n, hidden=[16]), embedding_dim=8,
                               checkpoint=str(path), features="penultimate")
    assert torch.equal(net.encoder[1].weight, clf.net[1].weight)
    assert net.head.in_features == 16 and net(torch.zeros(3, 1, 28, 28)).shape == (3, 2)


def test_mismatched_checkpoint_says_where_it_came_from(tmp_path):
    ckpt = saved_encoder(tmp_path)
    with pytest.raises(CheckpointMismatch, match=r"(?s)TripletEncoder.*embedding_dim=8.*shape mismatches.*"
                                                 r"model.net.encoder"):
        EncoderClassifierNet((1, 28, 28), 10, encoder=lambda s, n: MLP(s, n, hidden=[64], batch_norm=True),
                             embedding_dim=8, checkpoint=str(ckpt))
    with pytest.raises(FileNotFoundError, match="litlab run"):
        EncoderClassifierNet((1, 28, 28), 10, checkpoint=str(tmp_path / "missing.ckpt"))


def test_resnet18_weights_offline_and_uncached_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("lit_models.nets.transfer.download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable, match=r"(?s)not in the cache.*hub/checkpoints.*TORCH_HOME.*litlab checkpoint"):
        ResNet18((3, 32, 32), 2, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="Unknown resnet18 weights 'IMAGENET'"):
        ResNet18((3, 32, 32), 2, weights="IMAGENET")
    assert ResNet18((1, 28, 28), 2)(torch.zeros(2, 1, 28, 28)).shape == (2, 2)  # random init, 1 channel


def test_triplet_checkpoint_probe_finetune_round_trip_through_the_cli(mnist_dir):
    small = ["--model.encoder.hidden", "[32]", "--model.embedding_dim", "8"]
    pre = cli_main(["fit", *tiny(mnist_dir, "--config", str(REPO / "configs" / "triplet_mnist.yaml"), *small,
                                 "--trainer.callbacks", "[]", "--trainer.max_epochs", "1")])
    ckpt = pre.trainer.checkpoint_callback.best_model_path
    net = ["--model.net.encoder.hidden", "[32]", "--model.net.embedding_dim", "8", "--model.net.checkpoint", ckpt]
    probe = cli_main(["fit", *tiny(mnist_dir, "--config", str(REPO / "configs" / "probe_mnist.yaml"), *net)])
    assert torch.equal(probe.model.net.encoder[1].weight, pre.model.net[1].weight.to(probe.model.device))
    assert [c.mode for c in probe.trainer.callbacks if isinstance(c, EncoderFinetuning)] == ["linear_probe"]
    results = json.loads((Path(probe.trainer.log_dir) / "results.json").read_text())
    assert results["test/acc"] > 0.35  # measured 0.46 (10 classes, chance 0.1) from a 1-epoch 8-d embedding
    tuned = cli_main(["fit", *tiny(mnist_dir, "--config", str(REPO / "configs" / "finetune_mnist.yaml"), *net,
                                   "--model.lr", "0.01")])  # 8 steps of tiny data: the config's 1e-3 is too slow
    assert [len(g["params"]) for g in tuned.trainer.optimizers[0].param_groups] == [2, 4]  # head; encoder
    assert not torch.equal(tuned.model.net.encoder[1].weight.cpu(), pre.model.net[1].weight.cpu())
    # Fine-tuning the whole encoder beats the frozen probe by far: measured 0.87 against 0.46.
    assert json.loads((Path(tuned.trainer.log_dir) / "results.json").read_text())["test/acc"] > 0.7


def test_gallery_shows_images_the_best_run_gets_right_and_the_worst_wrong(mnist_dir, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("transfer_gallery", REPO / "scripts" / "transfer_gallery.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    good = Path(cli_main(["fit", *tiny(mnist_dir, "--model.net.hidden", "[32]")]).trainer.log_dir)
    bad = Path(cli_main(["fit", *tiny(mnist_dir, "--model.net.hidden", "[32]", "--model.lr", "1e-5",
                                      "--trainer.max_epochs", "1")]).trainer.log_dir)
    assert script.main([str(bad), str(good), "--k", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.index(str(good)) < printed.index(str(bad))  # ranked by test/acc
    rows = (good / "figures" / "transfer_gallery.csv").read_text().splitlines()
    assert rows[0] == "index,true,best_predicted,best_confidence,worst_predicted,worst_confidence"
    assert len(rows) == 4
    for row in rows[1:]:
        _, true, best, _, worst, _ = row.split(",")
        assert best == true != worst
    assert (good / "figures" / "transfer_gallery.png").stat().st_size > 5_000
    with pytest.raises(SystemExit):
        script.main([str(good)])  # one run: nothing to compare


@pytest.mark.slow
def test_triplet_encoder_then_linear_probe_on_real_mnist(real_mnist):
    """One epoch of triplet training, one of linear probe: the frozen embedding already separates the digits."""
    common = [*BASE, "--data.data_dir", str(real_mnist), "--data.download", "false",
              "--trainer.max_epochs", "1", "--trainer.logger.init_args.save_dir", "runs",
              "--trainer.enable_progress_bar", "false"]
    pre = cli_main(["fit", *common, "--config", str(REPO / "configs" / "triplet_mnist.yaml"),
                    "--trainer.callbacks", "[]", "--trainer.max_epochs", "1"])
    assert pre.trainer.callback_metrics["test/knn_acc"] > 0.95
    probe = cli_main(["fit", *common, "--config", str(REPO / "configs" / "probe_mnist.yaml"),
                      "--model.net.checkpoint", pre.trainer.checkpoint_callback.best_model_path])
    assert probe.trainer.callback_metrics["test/acc"] > 0.95
