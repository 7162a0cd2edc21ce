"""`litlab export`: TorchScript and ONNX files whose outputs equal the checkpoint's on a batch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli import cli_main
from conftest import REPO
from experiments import export


@pytest.fixture
def lenet_checkpoint(mnist_dir) -> tuple[Path, torch.nn.Module, torch.Tensor]:
    """A LeNet-5 (dropout 0.5: an export left in train mode would not match) fitted 1 epoch; its best.ckpt,
    the model as the CLI loaded it, and a batch of normalised test images."""
    cli = cli_main(["fit", "--config", str(REPO / "configs" / "base.yaml"), "--model.net", "lit_models.LeNet5",
                    "--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--data.download", "false",
                    "--trainer.max_epochs", "1", "--test_after_fit", "false", "--trainer.enable_progress_bar", "false"])
    x = cli.datamodule.split_tensors("test")[0][:16]
    return Path(cli.trainer.checkpoint_callback.best_model_path), cli.model.eval(), x


def test_torchscript_export_matches_the_checkpoint(lenet_checkpoint, tmp_path):
    ckpt, model, x = lenet_checkpoint
    out = export.main(["--ckpt_path", str(ckpt), "--output", str(tmp_path / "lenet.pt")])
    loaded = torch.jit.load(str(out))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
        assert not torch.allclose(model(x), model(x.flip(0)))  # the batch is not degenerate
    info = json.loads((tmp_path / "lenet.pt.json").read_text())
    assert info["input_shape"] == [1, 28, 28] and info["class_names"] == [str(d) for d in range(10)]
    assert info["mean"] == [0.1307] and info["std"] == [0.3081]


def test_onnx_export_matches_the_checkpoint(lenet_checkpoint, tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    ckpt, model, x = lenet_checkpoint
    out = export.main(["--ckpt_path", str(ckpt), "--format", "onnx"])
    assert out == ckpt.with_suffix(".onnx")
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        got = onnxruntime.InferenceSession(str(out)).run(None, {"images": x.numpy()})[0]
    else:  # onnx's own (slow, pure-Python) evaluator
        from onnx.reference import ReferenceEvaluator

        got = ReferenceEvaluator(str(out)).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


def test_onnx_without_the_package_and_a_missing_checkpoint_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(SystemExit, match="litlab export: checkpoint .*nothing.ckpt not found"):
        export.main(["--ckpt_path", str(tmp_path / "nothing.ckpt")])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(SystemExit, match=r'needs the onnx package: pip install "litlab\[onnx\]"'):
        export.main(["--ckpt_path", str(tmp_path / "nothing.ckpt"), "--format", "onnx"])
