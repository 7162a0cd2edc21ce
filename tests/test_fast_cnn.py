"""FastCNN and the fast CIFAR-10 recipe's pieces: whitening from data, flip TTA, label smoothing, Nesterov, config."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import cli as cli_module
from cli import cli_main
from conftest import REPO
from datamodules import CIFAR10
from fake_cifar import make_cifar_bin_dir
from helpers import BASE
from lit_models import Classifier, FastCNN, make_optimizer

RECIPE = ["--config", str(REPO / "configs" / "fast_cnn_cifar10.yaml")]


def correlated_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """[n, 3, 16, 16] images whose neighbouring pixels and channels are strongly correlated, like photos."""
    g = torch.Generator().manual_seed(seed)
    base = F.avg_pool2d(torch.randn(n, 1, 19, 19, generator=g), 4, stride=1)  # smooth: [n, 1, 16, 16]
    return base.repeat(1, 3, 1, 1) + 0.3 * torch.randn(n, 3, 16, 16, generator=g)


def test_whitening_decorrelates_the_patches_of_the_data_it_was_set_from():
    net = FastCNN((3, 16, 16), 10, widths=(4, 4, 4))
    x = correlated_images()
    assert not net.initialized
    net.init_from_data(x)
    assert net.initialized and not net[0].weight.requires_grad and net[0].bias.requires_grad
    out = F.conv2d(x, net[0].weight[:12])  # the 12 whitening filters (the other 12 are their negatives)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)
    # eigenvalue / (eigenvalue + eps) ≈ 1 for every direction the data varies in: an identity covariance
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert torch.equal(net[0].weight[12:], -net[0].weight[:12])
    # The flag is saved: a reloaded (or resumed) net is not re-initialised from other data.
    fresh = FastCNN((3, 16, 16), 10, widths=(4, 4, 4))
    fresh.load_state_dict(net.state_dict())
    assert fresh.initialized and torch.equal(fresh[0].weight, net[0].weight)


def test_eval_averages_the_image_and_its_mirror_and_training_does_not():
    net = FastCNN((3, 16, 16), 5, widths=(4, 8, 8))
    x = torch.randn(3, 3, 16, 16)
    net.eval()
    plain = FastCNN.forward(net.train(), x)  # train mode: one pass (BN in batch mode)
    net.eval()
    with torch.no_grad():
        one = torch.nn.Sequential.forward(net, x) * net.scale
        mirror = torch.nn.Sequential.forward(net, x.flip(-1)) * net.scale
        assert torch.allclose(net(x), (one + mirror) / 2, atol=1e-6)
        net.tta = False
        assert torch.allclose(net(x), one, atol=1e-6)
    assert plain.shape == (3, 5)
    with pytest.raises(ValueError, match="three widths"):
        FastCNN((3, 32, 32), 10, widths=(8, 8))


def test_label_smoothing_is_the_training_loss_only_and_nesterov_reaches_sgd():
    model = Classifier(net=lambda s, n: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, n)),
                       input_shape=(3, 2, 2), label_smoothing=0.2, nesterov=True, momentum=0.85)
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    loss, _ = model.training_loss(logits, y)
    assert torch.allclose(loss, F.cross_entropy(logits, y, label_smoothing=0.2))
    assert not torch.allclose(loss, model.loss(logits, y))  # evaluation stays plain cross-entropy
    opt = make_optimizer(model.parameters(), model.hparams)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.85
    with pytest.raises(ValueError, match="label_smoothing"):
        Classifier(label_smoothing=1.0)


def test_fit_sets_the_whitening_once_from_the_first_training_images(tmp_path: Path):
    data = make_cifar_bin_dir(tmp_path / "data", per_batch=40)
    dm = CIFAR10(data_dir=str(data), val_size=50, batch_size=25, augment=True, crop_padding=2, download=False)
    model = Classifier(net=FastCNN, input_shape=(3, 32, 32), label_smoothing=0.2)
    net = model.net
    net.data_examples = 30
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=0, accelerator="cpu")
    trainer.fit(model, dm)
    expected = FastCNN((3, 32, 32), 10)
    expected.init_from_data(dm.split_tensors("train", limit=30)[0])
    assert torch.allclose(net[0].weight, expected[0].weight)  # frozen: training did not move it
    before = net[0].weight.clone()
    net.init_from_data(torch.randn(30, 3, 32, 32))  # pretend a resumed net: on_fit_start must not redo it
    changed = net[0].weight.clone()
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              limit_val_batches=0, accelerator="cpu").fit(model, dm)
    assert torch.equal(net[0].weight, changed) and not torch.equal(changed, before)
    assert dm.train_dataloader().augment.padding == 2


@pytest.mark.parametrize("native_bf16", [False, True])
def test_the_recipe_config_builds_the_fast_cnn_with_bf16_only_where_the_cpu_has_it(tmp_path, monkeypatch, native_bf16):
    monkeypatch.setattr(cli_module, "cpu_has_bf16", lambda: native_bf16)
    data = make_cifar_bin_dir(tmp_path / "data")
    cli = cli_main([*BASE, *RECIPE, "--data.data_dir", str(data), "--data.download", "false",
                    "--trainer.logger", "false"], run=False)
    hp = cli.model.hparams
    assert isinstance(cli.model.net, FastCNN) and hp.nesterov and hp.label_smoothing == 0.2
    assert hp.schedule == "onecycle" and cli.datamodule.crop_padding == 2 and cli.datamodule.augment
    assert cli.trainer.precision == ("bf16-mixed" if native_bf16 else "32-true")
