"""Saliency/IG, weight templates, hidden representations, misclassified gallery, permutation importance."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from callbacks import HiddenRepresentations, MisclassifiedGallery, PermutationImportance, Saliency, WeightTemplates
from callbacks.analysis.gallery import most_confident_wrong
from callbacks.analysis.permutation import permutation_importance
from callbacks.analysis.representations import class_means, hidden_activations
from callbacks.analysis.saliency import attributions
from callbacks.analysis.testset import Predictions, black_image
from callbacks.analysis.weights import first_layer, templates
from cli import cli_main
from conftest import REPO
from datamodules import MNIST
from helpers import BASE
from lit_models import MLP, Classifier


def datamodule(mnist_dir: Path) -> MNIST:
    return MNIST(data_dir=str(mnist_dir), val_size=100, download=False, eval_batch_size=64)


def run_test(model: L.LightningModule, dm: MNIST, *callbacks: L.Callback) -> Path:
    """`trainer.test` as the CLI runs it (inference mode, eval mode); returns the run's figures folder."""
    trainer = L.Trainer(logger=CSVLogger("runs"), callbacks=list(callbacks), enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.test(model, datamodule=dm, verbose=False)
    return Path(trainer.log_dir) / "figures"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def classifier(hidden: list[int], activation: str = "relu") -> Classifier:
    torch.manual_seed(0)
    return Classifier(net=lambda shape, k: MLP(shape, k, hidden=hidden, activation=activation))


# -- saliency / integrated gradients ------------------------------------------------------------------------
def test_attributions_of_a_linear_model_are_its_weights_times_input(mnist_dir):
    model = classifier([])  # softmax regression: logit_k = w_k . x + b_k
    model.train()
    dm = datamodule(mnist_dir)
    w = model.net[1].weight.detach()  # [10, 784]
    with torch.inference_mode():  # as inside trainer.test: inputs are inference tensors
        x, _ = dm.split_tensors("test")
        x = x[:6]
        target = torch.tensor([0, 3, 9, 1, 1, 7])
        baseline = black_image(SimpleNamespace(datamodule=dm), (1, 28, 28), x.device)
        sal, ig = attributions(model, x, target, baseline, n_steps=8)
    torch.testing.assert_close(baseline, torch.full((1, 1, 28, 28), -0.1307 / 0.3081))  # black, normalised
    w_t = w[target].view(6, 1, 28, 28)
    torch.testing.assert_close(sal, w_t.abs())  # gradient of a linear logit: its weights
    torch.testing.assert_close(ig, (x - baseline) * w_t, atol=1e-5, rtol=1e-4)  # IG is exact for linear maps
    assert model.training and all(p.grad is None for p in model.parameters())  # mode restored, no grads left


def test_attributions_of_a_nonlinear_net_keep_their_axioms():
    """On a tanh MLP (where IG is not exact): saliency is autograd's input gradient, and IG's completeness error
    |sum(IG) - (f(x) - f(baseline))| shrinks as n_steps grows and is large at n_steps = 1."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        net[1].weight.mul_(3.0)  # a strongly curved path from the baseline to x
    x, target = torch.randn(4, 1, 3, 4), torch.tensor([0, 2, 1, 2])
    baseline = torch.zeros(1, 1, 3, 4)
    xg = x.clone().requires_grad_(True)
    autograd = torch.autograd.grad(net(xg).gather(1, target[:, None]).sum(), xg)[0]
    gap = (net(x) - net(baseline)).gather(1, target[:, None]).squeeze(1).detach()  # f(x) - f(baseline)
    errors = {}
    for n_steps in (1, 2, 16):
        sal, ig = attributions(net, x, target, baseline, n_steps=n_steps)
        torch.testing.assert_close(sal, autograd.abs())
        errors[n_steps] = float((ig.flatten(1).sum(1) - gap).abs().max())
    scale = float(gap.abs().max())
    assert errors[16] < 1e-3 * scale and errors[16] < errors[2] < errors[1], errors  # shrinks with n_steps
    assert errors[1] > 0.05 * scale, errors  # one step is the gradient at the midpoint: far from complete


def test_saliency_callback_writes_both_groups_and_ig_completeness(mnist_dir):
    model = classifier([32, 32], "tanh")  # non-linear: IG's sum is complete only when the callback integrates well
    figures = run_test(model, datamodule(mnist_dir), Saliency(num_examples=3, n_steps=32))
    assert {"saliency_correct.png", "saliency_wrong.png", "saliency.csv"} <= {p.name for p in figures.iterdir()}
    rows = read_csv(figures / "saliency.csv")
    assert [r["group"] for r in rows] == ["correct"] * 3 + ["wrong"] * 3
    for r in rows:  # completeness: IG's attributions add up to logit(x) - logit(baseline)
        # measured within 3e-8 at n_steps=32; n_steps=1 misses by ~3 % (0.2399 vs 0.2327)
        assert float(r["ig_sum"]) == pytest.approx(float(r["logit_minus_baseline_logit"]), rel=1e-4, abs=1e-6)
        assert (r["true"] == r["predicted"]) == (r["group"] == "correct")


# -- weight templates ---------------------------------------------------------------------------------------
def test_weight_templates_are_the_first_layer_rows(mnist_dir):
    model = classifier([16])
    name, layer = first_layer(model)
    assert name == "net.1" and layer is model.net[1]
    tiles = templates(layer, (1, 28, 28))
    for u in (0, 7, 15):
        torch.testing.assert_close(tiles[u, 0], model.net[1].weight[u].detach().view(28, 28))
    figures = run_test(model, datamodule(mnist_dir), WeightTemplates(max_units=8))
    rows = read_csv(figures / "weight_templates.csv")
    assert (figures / "weight_templates.png").is_file() and len(rows) == 16
    assert float(rows[3]["l2_norm"]) == pytest.approx(float(model.net[1].weight[3].detach().norm()), rel=1e-5)


def test_weight_templates_of_a_conv_net_and_a_clear_error():
    conv = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 24 * 24, 10))
    name, layer = first_layer(conv)
    assert name == "0" and templates(layer, (1, 28, 28)).shape == (4, 1, 5, 5)
    with pytest.raises(ValueError, match="takes 100 inputs, which is not an image of shape"):
        templates(nn.Linear(100, 4), (1, 28, 28))


# -- hidden representations ---------------------------------------------------------------------------------
def test_hooks_capture_each_nonlinearity_output():
    torch.manual_seed(0)
    net = MLP((1, 28, 28), 10, hidden=[16, 8], activation="tanh")
    x = torch.randn(5, 1, 28, 28)
    acts = hidden_activations(net, x, batch_size=2)  # batches of 2, 2, 1 are concatenated in order
    assert list(acts) == ["2", "4"] and acts["2"].shape == (5, 16) and acts["4"].shape == (5, 8)
    torch.testing.assert_close(acts["2"], torch.tanh(net[1](x.flatten(1))).detach())
    assert not net[2]._forward_hooks  # hooks removed

    class Twice(nn.Module):  # one ReLU module used twice, and a conv feature map
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Linear(3, 4)

        def forward(self, x):
            return self.relu(self.fc(self.relu(self.conv(x)).mean((2, 3))))

    model = Twice()
    acts = hidden_activations(model, x)
    assert list(acts) == ["relu", "relu#2"]
    assert acts["relu"].shape == (5, 3) and acts["relu#2"].shape == (5, 4)  # conv maps averaged over space
    torch.testing.assert_close(acts["relu"], torch.relu(model.conv(x)).mean((2, 3)).detach())


def test_class_means_by_group():
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    y, ok = torch.tensor([0, 0, 1, 1]), torch.tensor([True, True, False, True])
    torch.testing.assert_close(class_means(feats, y, ok, 3)[:2], torch.tensor([[2.0, 3.0], [7.0, 8.0]]))
    assert class_means(feats, y, ok, 3)[2].isnan().all()  # no examples of class 2
    torch.testing.assert_close(class_means(feats, y, ~ok, 3)[1], torch.tensor([5.0, 6.0]))


def test_hidden_representations_mark_the_misclassified(mnist_dir):
    model = classifier([16, 8])
    dm = datamodule(mnist_dir)
    figures = run_test(model, dm, HiddenRepresentations(max_points=150, max_units=4))
    names = {p.name for p in figures.iterdir()}
    assert {f"hidden{k}_{kind}" for k in (1, 2) for kind in ("projection.png", "projection.csv",
                                                            "class_means.png", "class_means.csv")} <= names
    rows = read_csv(figures / "hidden2_projection.csv")
    assert len(rows) == 150 and all(r["tsne_1"] != "nan" for r in rows)
    x, y = dm.split_tensors("test")
    index = torch.tensor([int(r["index"]) for r in rows])
    with torch.no_grad():
        wrong = (model.eval()(x[index]).argmax(-1) != y[index]).tolist()
    assert 0 < sum(wrong) < 150
    assert [r["correct"] == "False" for r in rows] == wrong
    means = read_csv(figures / "hidden1_class_means.csv")
    assert len(means) == 2 * 10 * 4 and {r["group"] for r in means} == {"correct", "misclassified"}


# -- misclassified gallery ----------------------------------------------------------------------------------
def test_most_confident_wrong_picks_the_top_k():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.05, 0.95], [0.7, 0.3], [0.45, 0.55]])
    y = torch.tensor([0, 0, 0, 0, 1, 1])  # wrong: 1 (0.8), 2 (0.6), 3 (0.95), 4 (0.7); right: 0, 5
    pred = Predictions(torch.zeros(6, 1, 2, 2), y, probs, torch.arange(6))
    assert most_confident_wrong(pred, 3).tolist() == [3, 1, 4]
    assert most_confident_wrong(pred, 10).tolist() == [3, 1, 4, 2]


class Lookup(nn.Module):
    """A scripted model: returns a fixed logit row for each known image (found by nearest match: test batches
    normalise as u8 * scale + shift, split_tensors as (u8 / 255 - mean) / std, equal to float rounding)."""

    def __init__(self, images: torch.Tensor, logits: torch.Tensor) -> None:
        super().__init__()
        self.images, self.logits = images.flatten(1), logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x.flatten(1)[:, None, :] - self.images[None]).abs().amax(-1)  # [B, N]
        best = dist.min(1)
        assert (best.values < 1e-4).all()
        return self.logits[best.indices]


def test_gallery_lists_exactly_the_most_confident_mistakes(mnist_dir):
    dm = datamodule(mnist_dir)
    x, y = dm.split_tensors("test")
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(len(y), 10, generator=gen) * 3
    probs = logits.softmax(-1)
    model = Classifier(net=lambda shape, k: Lookup(x, logits))
    figures = run_test(model, dm, MisclassifiedGallery(k=5))
    rows = read_csv(figures / "misclassified_test.csv")
    wrong = (probs.argmax(-1) != y).nonzero().squeeze(1)
    expected = wrong[probs[wrong].max(-1).values.argsort(descending=True)[:5]]
    assert [int(r["index"]) for r in rows] == expected.tolist()
    assert [float(r["confidence"]) for r in rows] == pytest.approx(probs[expected].max(-1).values.tolist(), abs=1e-6)
    assert [r["predicted"] for r in rows] == [str(int(p)) for p in probs[expected].argmax(-1)]
    assert (figures / "misclassified_test.png").is_file()


# -- permutation importance ---------------------------------------------------------------------------------
class OnePatch(nn.Module):
    """Class 1 when the mean of the patch at rows 8-11, columns 12-15 is positive; looks at nothing else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, 0, 8:12, 12:16].mean((1, 2))
        return torch.stack([-m, m], 1)


def test_only_the_patch_the_model_reads_matters():
    x = torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0, 8:12, 12:16].mean((1, 2)) > 0).long()
    base, acc = permutation_importance(OnePatch(), x, y, patch_size=4, seed=0, batch_size=100000)
    assert base == 1.0 and acc.shape == (7, 7)
    drop = base - acc
    assert drop[2, 3] > 0.3  # shuffling the read patch makes the model guess
    drop[2, 3] = 0
    assert (drop == 0).all()  # every other patch: exactly no change
    _, chunked = permutation_importance(OnePatch(), x, y, patch_size=4, seed=0, batch_size=700)
    torch.testing.assert_close(chunked, acc)  # batching several patches per pass changes nothing
    assert permutation_importance(OnePatch(), x, y, patch_size=5)[1].shape == (6, 6)  # ragged last patch


def test_permutation_callback_writes_heat_map_and_table(mnist_dir):
    figures = run_test(classifier([16]), datamodule(mnist_dir), PermutationImportance(patch_size=7))
    rows = read_csv(figures / "permutation_importance.csv")
    assert len(rows) == 16 and (figures / "permutation_importance.png").is_file()
    assert {(int(r["y0"]), int(r["x0"])) for r in rows} == {(7 * r, 7 * c) for r in range(4) for c in range(4)}


# -- the analysis config ------------------------------------------------------------------------------------
def test_analysis_config_leaves_every_figure(mnist_dir):
    cli = cli_main(["fit", *BASE, "--config",
                    str(REPO / "configs" / "analysis.yaml"), "--data.data_dir", str(mnist_dir),
                    "--data.val_size", "100", "--data.download", "false", "--trainer.max_epochs", "1",
                    "--trainer.logger.init_args.save_dir", "runs", "--trainer.enable_progress_bar", "false"])
    names = {p.name for p in (Path(cli.trainer.log_dir) / "figures").iterdir()}
    expected = {"saliency_correct.png", "saliency.csv", "weight_templates.png", "weight_templates.csv",
                "hidden1_projection.png", "hidden2_class_means.csv", "misclassified_test.png",
                "misclassified_test.csv", "permutation_importance.png", "permutation_importance.csv",
                "gradient_norms.png", "gradient_norms.csv", "learning_curves.png", "learning_curves.csv",
                *(f"confusion_{s}.{e}" for s in ("train", "test") for e in ("png", "csv", "txt"))}
    assert expected <= names, expected - names
    assert not any(n.endswith(".tmp") for n in names)
    # `test` after fit used the best checkpoint; the test confusion matrix counts what results.json reports.
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    assert cli.trainer.ckpt_path == results["best_checkpoint"] and results["best_checkpoint"].endswith("best.ckpt")
    counts = next(c for c in cli.trainer.callbacks if type(c).__name__ == "ConfusionMatrix").counts["test"]
    assert results["test/acc"] == pytest.approx(counts.trace().item() / counts.sum().item(), abs=1e-6)
