"""GradCAM: captum's LayerGradCam on the last conv layer, checked against Grad-CAM computed by hand."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from callbacks import GradCAM
from callbacks.analysis.gradcam import grad_cam, last_conv, upsample
from datamodules import MNIST
from lit_models import MLP, Classifier


def tiny_conv_net() -> nn.Sequential:
    torch.manual_seed(0)  # conv 1→3 (28→26), ReLU, pool (→13), conv 3→4 (→11): the layer Grad-CAM weighs
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 11 * 11, 10))


def by_hand(net: nn.Sequential, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ReLU(Σ_k α_k A_k), α_k = spatial mean of d logit_target / d A_k, with A = the last conv's output."""
    a = net[:4](x)  # [N, 4, 11, 11]
    logits = net[4:](a)
    grad = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)[0]  # examples are independent
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # [N, 4, 1, 1]
    return torch.relu((alpha * a).sum(1))  # [N, 11, 11]


def test_grad_cam_matches_the_hand_computation():
    net = tiny_conv_net()
    name, layer = last_conv(net)
    assert name == "3" and layer is net[3]
    x, target = torch.randn(5, 1, 28, 28), torch.tensor([0, 3, 9, 1, 7])
    expected = by_hand(net, x, target)
    assert (expected > 0).any() and (expected == 0).any()  # the ReLU is exercised both ways
    net.train()
    with torch.inference_mode():  # as inside trainer.test: inputs are inference tensors
        cam = grad_cam(net, layer, x.clone(), target)
    torch.testing.assert_close(cam, expected, atol=1e-6, rtol=1e-5)
    assert net.training and all(p.grad is None for p in net.parameters())  # mode restored, no grads left
    big = upsample(cam, (28, 28))
    assert big.shape == (5, 28, 28) and float(big.min()) >= 0.0


def test_last_conv_of_a_classifier_and_a_clear_error():
    model = Classifier(net=lambda shape, k: tiny_conv_net())
    assert last_conv(model) == ("net.3", model.net[3])
    with pytest.raises(ValueError, match="has no nn.Conv2d"):
        last_conv(Classifier(net=lambda shape, k: MLP(shape, k, hidden=[8])))


def test_callback_writes_the_figure_and_its_table(mnist_dir: Path, tmp_path: Path):
    model = Classifier(net=lambda shape, k: tiny_conv_net())
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, download=False, eval_batch_size=64)
    trainer = L.Trainer(logger=CSVLogger(str(tmp_path / "runs")), callbacks=[GradCAM(num_examples=3)],
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.test(model, datamodule=dm, verbose=False)
    figures = Path(trainer.log_dir) / "figures"
    assert figures.is_relative_to(tmp_path)
    assert {"gradcam.png", "gradcam.csv"} <= {p.name for p in figures.iterdir()}
    with open(figures / "gradcam.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 11 * 11 and len({r["index"] for r in rows}) == 3
    # The table holds the unscaled maps of the predicted class: recompute the first example's by hand.
    first = [r for r in rows if r["index"] == rows[0]["index"]]
    x, _ = dm.split_tensors("test")
    i = int(rows[0]["index"])
    with torch.no_grad():
        target = model(x[i : i + 1]).argmax(-1)
    assert str(int(target)) == first[0]["predicted"]
    expected = by_hand(model.net, x[i : i + 1], target)[0]
    got = torch.tensor([float(r["cam"]) for r in first]).view(11, 11)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert plt.get_fignums() == []  # the figure was closed
