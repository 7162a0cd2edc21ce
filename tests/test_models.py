from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn

from datamodules import MNIST
from lit_models import MLP, Classifier


def test_mlp_layers_follow_the_arguments():
    net = MLP((1, 28, 28), 10, hidden=[32, 16], activation="tanh", batch_norm=True, dropout=0.2)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout,
                     nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout, nn.Linear]
    assert net(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [32, 16, 10]
    assert isinstance(MLP(hidden=[]) [1], nn.Linear)  # no hidden layer: softmax regression


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown activation 'gelu': choose one of \['relu', 'sigmoid', 'tanh'\]"):
        MLP(activation="gelu")


def test_scaled_normal_init_matches_its_formula():
    torch.manual_seed(0)
    net = MLP((1, 28, 28), 10, hidden=[512], init="scaled_normal")
    w = net[1].weight
    assert abs(w.std().item() - 0.1 / math.sqrt(784)) < 0.05 * 0.1 / math.sqrt(784)
    assert torch.count_nonzero(net[1].bias) == 0


def test_classifier_overfits_a_few_batches(mnist_dir):
    L.seed_everything(0)
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, batch_size=32, download=False)
    model = Classifier(net=lambda shape, k: MLP(shape, k, hidden=[64]), optimizer="adam", lr=1e-2)
    trainer = L.Trainer(overfit_batches=2, max_epochs=30, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, dm)
    assert trainer.train_dataloader.sampler is None  # unshuffled: the same batches every epoch
    assert trainer.callback_metrics["train/loss"] < 0.05
    assert trainer.callback_metrics["train/acc"] == 1.0


def test_epoch_metrics_equal_a_hand_count(mnist_dir):
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, eval_batch_size=30, download=False)
    model = Classifier()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, dm)
    x, y = dm.split_tensors("test")
    with torch.no_grad():
        logits = model(x)
    assert trainer.callback_metrics["test/acc"].item() == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert trainer.callback_metrics["test/loss"].item() == pytest.approx(
        nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    probs = torch.cat(trainer.predict(model, dm))
    assert probs.shape == (200, 10) and torch.allclose(probs.sum(-1), torch.ones(200))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_weight_decay_and_lr_decay(optimizer):
    model = Classifier(optimizer=optimizer, lr=0.5, weight_decay=1e-4, lr_decay=0.97)
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert type(opt).__name__.lower() == optimizer and opt.param_groups[0]["weight_decay"] == 1e-4
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.97)
    assert isinstance(Classifier(lr_decay=1.0).configure_optimizers(), torch.optim.SGD)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="lr > 0"):
        Classifier(lr=-1)
