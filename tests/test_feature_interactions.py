"""Integration fixes between features merged separately: schedules × finetuning, the scratch MLP × analysis
callbacks, the curriculum × one-logit nets."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from callbacks.training.curriculum import Curriculum
from callbacks.training.finetuning import EncoderFinetuning
from callbacks.analysis.weights import first_layer, templates
from cli import cli_main
from conftest import REPO
from datamodules import MNIST
from helpers import BASE
from lit_models import MLP, Classifier, LogisticRegression, ScratchMLP
from lit_models.nets.transfer import EncoderClassifierNet


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


class StepLRs(L.Callback):
    """Every param group's learning rate after each training step: [steps][groups]."""

    def __init__(self):
        self.lrs: list[list[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.lrs.append([float(g["lr"]) for g in trainer.optimizers[0].param_groups])


def encoder_net(shape, n):  # randomly initialised encoder: the schedule is what is under test, not transfer
    return EncoderClassifierNet(shape, n, encoder=lambda s, d: MLP(s, d, hidden=[16]), embedding_dim=8)


@pytest.mark.parametrize("schedule", ["onecycle", "exponential"])
def test_finetuned_backbone_group_follows_the_schedule_at_the_scaled_lr(mnist_dir, schedule):
    # 500 training examples / batch 100 = 5 steps an epoch; the backbone joins at epoch 1 (step 5).
    L.seed_everything(0)
    model = Classifier(net=encoder_net, optimizer="sgd", lr=0.1, lr_decay=0.5, schedule=schedule)
    lrs = StepLRs()
    with pytest.warns(UserWarning, match="no checkpoint"):
        L.Trainer(max_epochs=3, callbacks=[EncoderFinetuning("finetune", 1, 0.1), lrs], logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  num_sanity_val_steps=0).fit(model, MNIST(str(mnist_dir), val_size=100, batch_size=100,
                                                             download=False))
    assert len(lrs.lrs) == 15 and all(len(g) == 1 for g in lrs.lrs[:5]) and all(len(g) == 2 for g in lrs.lrs[5:])
    head = [g[0] for g in lrs.lrs]
    for h, b in (g for g in lrs.lrs[5:]):
        assert b == pytest.approx(0.1 * h, rel=1e-6)  # every step after unfreezing: 0.1 × the head's
    # The head's own schedule is untouched (the hook sees each step's lr after the scheduler stepped).
    if schedule == "onecycle":  # up to lr, then annealed to ~lr/25/1e4 at the last step
        assert max(head) == pytest.approx(0.1, rel=0.01) and min(head[5:]) < 1e-6
    else:  # halved at every epoch end
        assert head == pytest.approx([0.1] * 4 + [0.05] * 5 + [0.025] * 5 + [0.0125])


def test_scratch_mlp_under_the_analysis_config(mnist_dir):
    # configs/analysis.yaml's train confusion matrix and learning curves need the training step's preds, and
    # WeightTemplates the first layer of a ScratchNet (W1 [784, H], a Parameter, not an nn.Linear), and
    # GradientNorms the parameters HandSGD steps (they do not require grad: the gradients are set by hand).
    cli = cli_main(["fit", *BASE, "--config", str(REPO / "configs" / "scratch_mlp.yaml"),
                    "--config", str(REPO / "configs" / "analysis.yaml"), "--data.data_dir", str(mnist_dir),
                    "--data.val_size", "100", "--data.download", "false", "--trainer.max_epochs", "1",
                    "--trainer.logger.init_args.save_dir", "runs", "--model.hidden", "[12]"])
    figures = Path(cli.trainer.log_dir) / "figures"
    train = read_csv(figures / "confusion_train.csv")
    assert sum(float(r["count"]) for r in train) == 500  # every training example of the epoch, counted once
    curves = [r for r in read_csv(figures / "learning_curves.csv") if r["stage"] == "train"]
    assert len(curves) == cli.trainer.num_training_batches
    # Each row is one batch's accuracy: weighted by the batch sizes (500 = 3 x 128 + 116) they give back the
    # epoch's train/acc, so a row of the wrong batch (or of stale predictions) shows.
    bs = cli.datamodule.batch_size
    sizes = [min(bs, 500 - i * bs) for i in range(len(curves))]
    logged = [float(r["train/acc"]) for r in read_csv(Path(cli.trainer.log_dir) / "metrics.csv") if r.get("train/acc")]
    assert sum(float(r["acc"]) * n for r, n in zip(curves, sizes)) / 500 == pytest.approx(logged[-1], rel=1e-5)
    w1 = cli.model.net.W1.detach()  # [784, 12]
    units = read_csv(figures / "weight_templates.csv")
    assert len(units) == 12 and (figures / "weight_templates.png").is_file()
    assert float(units[5]["l2_norm"]) == pytest.approx(float(w1[:, 5].norm()), rel=1e-5)
    grads = read_csv(figures / "gradient_norms.csv")
    assert [r["layer"] for r in grads] == ["net"] and float(grads[0]["mean_l2_norm"]) > 0
    name, weight = first_layer(cli.model)
    torch.testing.assert_close(templates(weight, (1, 28, 28))[5, 0], w1[:, 5].view(28, 28))


def test_weight_templates_find_a_scratch_nets_first_layer():
    torch.manual_seed(0)
    model = ScratchMLP(hidden=[6])
    name, weight = first_layer(model)
    tiles = templates(weight, (1, 28, 28))  # [6, 1, 28, 28]: unit u's tile is column u of W1 [784, 6]
    assert name == "net.first_layer_weight()" and tiles.shape == (6, 1, 28, 28)
    torch.testing.assert_close(tiles[4, 0], model.net.W1[:, 4].view(28, 28))


def test_curriculum_scores_a_one_logit_net_by_its_binary_cross_entropy():
    torch.manual_seed(0)
    model = Classifier(net=LogisticRegression, num_classes=2)
    x, y = torch.randn(10, 1, 28, 28), torch.randint(0, 2, (10,))
    trainer = SimpleNamespace(datamodule=SimpleNamespace(split_tensors=lambda split: (x, y)))
    scores, labels = Curriculum(score_batch_size=4).score(trainer, model)
    z = model.net(x)[:, 0].detach()  # [10] log-odds of class 1
    torch.testing.assert_close(scores, F.binary_cross_entropy_with_logits(z, y.float(), reduction="none"))
    assert torch.equal(labels, y)
