"""ConfusionMatrix, GradientNorms, LearningCurves against hand computations (others: test_analysis_interpretation)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import ConfusionMatrix, GradientNorms, LearningCurves
from callbacks.analysis.confusion import confusion_counts, most_confused
from callbacks.analysis.gradients import layer_grad_norms, layer_groups
from datamodules import MNIST
from helpers.tiny_runs import Scripted, trainer
from lit_models import MLP, Classifier


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_confusion_counts_and_most_confused_by_hand():
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 2, 2, 0, 1])
    counts = confusion_counts(preds, targets, 3)
    assert counts.tolist() == [[1, 2, 0], [1, 1, 0], [1, 1, 2]]
    assert most_confused(counts, 3) == [(0, 1, 2, pytest.approx(200 / 3)), (1, 0, 1, 50.0), (2, 0, 1, 25.0)]


def datamodule(mnist_dir: Path) -> MNIST:
    return MNIST(data_dir=str(mnist_dir), val_size=100, download=False, eval_batch_size=64, batch_size=100)


def test_confusion_matrix_files_match_a_hand_count(mnist_dir):
    torch.manual_seed(0)
    model = Classifier(net=lambda shape, k: MLP(shape, k, hidden=[16]))
    dm = datamodule(mnist_dir)
    cb = ConfusionMatrix(stages=("train", "val", "test"), top_k=5)
    t = trainer(max_epochs=1, callbacks=[cb])
    t.fit(model, datamodule=dm)
    t.test(model, datamodule=dm, verbose=False)
    figures = Path(t.log_dir) / "figures"
    x, y = dm.split_tensors("test")
    with torch.no_grad():
        preds = model.eval()(x).argmax(-1)
    hand = torch.zeros(10, 10, dtype=torch.long)
    for t_, p in zip(y.tolist(), preds.tolist()):
        hand[t_, p] += 1
    assert torch.equal(cb.counts["test"], hand)
    rows = read_csv(figures / "confusion_test.csv")
    assert len(rows) == 100 and sum(int(r["count"]) for r in rows) == len(y) == 200
    cell = {(r["true"], r["predicted"]): r for r in rows}
    for tr, pr in ((3, 3), (3, 5), (7, 1)):
        assert int(cell[(str(tr), str(pr))]["count"]) == hand[tr, pr]
        assert float(cell[(str(tr), str(pr))]["percent_of_true"]) == pytest.approx(
            100 * hand[tr, pr].item() / max(hand[tr].sum().item(), 1), abs=1e-3)
    text = (figures / "confusion_test.txt").read_text().splitlines()
    assert "200 examples" in text[0]
    t0, p0, c0, _ = most_confused(hand, 1)[0] if hand.sum() > hand.trace() else (None,) * 4
    if t0 is not None:
        assert text[2].startswith(f"{t0} -> {p0}: {c0} (")
    assert cb.counts["train"].sum() == 500 and cb.counts["val"].sum() == 100  # one epoch, no sanity-check batches
    assert {"confusion_train.png", "confusion_val.png", "confusion_test.png"} <= {p.name for p in figures.iterdir()}


def test_confusion_matrix_needs_preds():
    with pytest.raises(ValueError, match="stages must be a non-empty subset"):
        ConfusionMatrix(stages=("testing",))
    cb = ConfusionMatrix(stages=("train",))
    t = trainer(callbacks=[cb], max_steps=1)
    with pytest.raises(RuntimeError, match="return a dict with 'preds'"):
        t.fit(Scripted([0.0]))


# -- gradient norms -----------------------------------------------------------------------------------------
class TwoLinear(L.LightningModule):
    """loss = sum(a(x)) + 2 * sum(c(x)): dL/dW_a = each row sum_batch(x), dL/db_a = batch size, dL/dW_c = 2 sum(x)."""

    def __init__(self, lr: float = 0.0) -> None:
        super().__init__()
        self.lr, self.a, self.c = lr, nn.Linear(3, 2), nn.Linear(3, 1, bias=False)

    def training_step(self, batch, batch_idx):
        x = batch[0]
        return self.a(x).sum() + 2 * self.c(x).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


X = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0], [-1.0, 0.0, 1.0]])


def hand_norms(batch: torch.Tensor) -> tuple[float, float]:
    s = batch.sum(0)  # [3]
    a = math.sqrt(2 * float(s.square().sum()) + 2 * len(batch) ** 2)  # two weight rows + two bias entries
    return a, 2 * float(s.norm())


def test_gradient_norms_equal_a_hand_computation_and_are_measured_before_clipping(tmp_path):
    cb = GradientNorms()
    loader = DataLoader(TensorDataset(X), batch_size=2)  # two steps per epoch: rows 0-1, rows 2-3
    t = trainer(tmp_path, max_epochs=2, callbacks=[cb], gradient_clip_val=0.01)
    model = TwoLinear()
    t.fit(model, train_dataloaders=loader)
    (a1, c1), (a2, c2) = hand_norms(X[:2]), hand_norms(X[2:])
    assert cb.layers == ["a", "c"]
    assert [m for _, m in cb.history["a"]] == pytest.approx([(a1 + a2) / 2] * 2, rel=1e-6)
    assert [m for _, m in cb.history["c"]] == pytest.approx([(c1 + c2) / 2] * 2, rel=1e-6)
    assert float(t.callback_metrics["grad_norm/c"]) == pytest.approx((c1 + c2) / 2, rel=1e-6)
    rows = read_csv(Path(t.log_dir) / "figures" / "gradient_norms.csv")
    assert [(r["epoch"], r["layer"]) for r in rows] == [("0", "a"), ("1", "a"), ("0", "c"), ("1", "c")]
    assert (Path(t.log_dir) / "figures" / "gradient_norms.png").is_file()
    # The clipping still happens after the hook: with lr 1, one step moves the weights by the clipped gradient.
    model = TwoLinear(lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    trainer(tmp_path, max_steps=1, callbacks=[GradientNorms()], gradient_clip_val=0.01).fit(
        model, train_dataloaders=loader)
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert float(step.norm()) == pytest.approx(0.01, rel=1e-4)  # the total norm, clipped


class DeepSigmoid(L.LightningModule):
    """15 sigmoid layers: gradients shrink towards the input (vanishing), as in report 001's deep net."""

    def __init__(self) -> None:
        super().__init__()
        layers = [m for _ in range(15) for m in (nn.Linear(3, 3), nn.Sigmoid())]
        self.net = nn.Sequential(*layers, nn.Linear(3, 1))

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_gradient_norms_of_a_deep_net_are_drawn_against_depth(tmp_path, monkeypatch):
    import callbacks.analysis.gradients as gradients

    drawn = {}

    def capture(trainer, fig, name, title):  # read the drawn axes instead of writing the PNG
        ax = fig.axes[0]
        drawn.update(lines=[(line.get_label(), line.get_ydata()) for line in ax.get_lines()], xlabel=ax.get_xlabel())
        gradients.plt.close(fig)

    monkeypatch.setattr(gradients, "save_figure", capture)
    cb = GradientNorms(vanish_below=1e-30)
    trainer(tmp_path, max_epochs=2, callbacks=[cb]).fit(DeepSigmoid(), DataLoader(TensorDataset(X), batch_size=2))
    assert len(cb.layers) == 16 > GradientNorms.MAX_LINES
    assert drawn["xlabel"].startswith("layer index (0 = net.0")
    epochs = [(label, y) for label, y in drawn["lines"] if label.startswith("epoch")]
    assert [label for label, _ in epochs] == ["epoch 0", "epoch 1"]
    y = epochs[0][1]
    assert len(y) == 16 and y[0] < y[-1] / 100  # the input side's gradient has vanished


def test_layer_norms_group_weight_and_bias_and_skip_missing_gradients():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    names, params, group = layer_groups(net)
    assert names == ["0", "2"] and group.tolist() == [0, 0, 1, 1]
    params[0].grad, params[1].grad = torch.ones(2, 2), torch.tensor([3.0, 4.0])  # layer "2" has no gradient
    assert layer_grad_norms(params, group, 2).tolist() == pytest.approx([math.sqrt(4 + 25), 0.0])


def test_gradient_norms_warn_on_exploding_layers(tmp_path):
    with pytest.warns(UserWarning, match="layer 'c' has exploding gradients"):
        trainer(tmp_path, callbacks=[GradientNorms(explode_above=10.0, plot=False)]).fit(
            TwoLinear(), train_dataloaders=DataLoader(TensorDataset(X * 3), batch_size=4))
    with pytest.raises(ValueError, match="vanish_below < explode_above"):
        GradientNorms(vanish_below=1.0, explode_above=0.5)


# -- learning curves ----------------------------------------------------------------------------------------
def test_learning_curves_record_every_iteration_and_each_evaluation(mnist_dir):
    torch.manual_seed(0)
    model = Classifier(net=lambda shape, k: MLP(shape, k, hidden=[16]))
    dm = datamodule(mnist_dir)
    cb = LearningCurves()
    t = trainer(max_epochs=2, callbacks=[cb])
    t.fit(model, datamodule=dm)
    figures = Path(t.log_dir) / "figures"
    rows = read_csv(figures / "learning_curves.csv")
    train = [r for r in rows if r["stage"] == "train"]
    assert [int(r["iteration"]) for r in train] == list(range(1, 11))  # 500 examples / 100, two epochs
    assert [r["epoch"] for r in train] == ["0"] * 5 + ["1"] * 5
    val = [r for r in rows if r["stage"] == "val"]
    assert [int(r["iteration"]) for r in val] == [5, 10]  # no sanity-check point
    logged = read_csv(Path(t.log_dir) / "metrics.csv")
    # Five equal batches an epoch: the mean of each epoch's per-step rows is the epoch's logged train loss and
    # accuracy, so a step recorded twice, dropped, or taken from the wrong batch shows.
    for key, col in (("train/loss", "loss"), ("train/acc", "acc")):
        epochs = [float(r[key]) for r in logged if r.get(key)]
        steps = [sum(float(r[col]) for r in train[e * 5:(e + 1) * 5]) / 5 for e in range(2)]
        assert steps == pytest.approx(epochs, rel=1e-5)
    val_logged = [float(r["val/loss"]) for r in logged if r.get("val/loss")]
    assert [float(r["loss"]) for r in val] == pytest.approx(val_logged, rel=1e-5)
    t.test(model, datamodule=dm, verbose=False)
    test = [r for r in read_csv(figures / "learning_curves.csv") if r["stage"] == "test"]
    assert len(test) == 1 and float(test[0]["acc"]) == pytest.approx(float(t.callback_metrics["test/acc"]))
    assert int(test[0]["iteration"]) == 10 and (figures / "learning_curves.png").is_file()
    # Testing a checkpoint: the point sits at the step the checkpoint was saved at (as if the best were step 3).
    ckpt = Path("three.ckpt")
    t.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)
    torch.save({**state, "global_step": 3, "epoch": 0}, ckpt)
    t.test(model, datamodule=dm, verbose=False, ckpt_path=str(ckpt))
    test = [r for r in read_csv(figures / "learning_curves.csv") if r["stage"] == "test"]
    assert [(r["iteration"], r["epoch"]) for r in test] == [("10", "2"), ("3", "0")]
