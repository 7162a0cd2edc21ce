"""`litlab export --ckpt_path RUN/checkpoints/best.ckpt --format torchscript|onnx`: the trained net, without litlab.

The exported model is the LightningModule's `forward` in eval mode: input `float32 [N, C, H, W]`, normalised
as in training ((pixel / 255 - mean) / std), output class logits `[N, num_classes]`. A JSON file beside it
(`<output>.json`) gives the input shape, mean, std and class names, so another program can prepare images
and name the classes. TorchScript needs nothing but torch; ONNX needs the `onnx` package (`pip install
"litlab[onnx]"`, which also brings onnxruntime to run it).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from runtime.files import write_json_atomic

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


def fail(message: str) -> SystemExit:
    return SystemExit(f"litlab export: {message}")


def load_checkpoint(path: Path) -> tuple[L.LightningModule, dict[str, Any]]:
    """The checkpoint's model (eval mode, CPU) and what its data module says about inputs (may be empty)."""
    import datamodules  # noqa: F401 -- Lightning only rebuilds classes that are already imported
    import lit_models  # noqa: F401

    if not path.is_file():
        raise fail(f"checkpoint {path} not found; a run's are in <run dir>/checkpoints/ (best.ckpt, last.ckpt).")
    try:
        model = L.LightningModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        why = str(err).splitlines()[0][:200]
        raise fail(f"{path} holds Python objects that safe loading refuses ({why}).") from None
    except (RuntimeError, ValueError, KeyError) as err:
        raise fail(f"{path} is not a litlab checkpoint that can be rebuilt ({err}).") from None
    info: dict[str, Any] = {"input_shape": list(model.hparams.input_shape)}
    try:
        dm = L.LightningDataModule.load_from_checkpoint(path, weights_only=True)
        info.update(mean=list(dm.mean), std=list(dm.std), class_names=list(dm.class_names),
                    data_module=type(dm).__name__)
    except (KeyError, ValueError, TypeError, AttributeError):
        pass  # a checkpoint written without a data module: the shape is all there is to say
    return model.eval(), info


def export(model: L.LightningModule, fmt: str, output: Path, example: torch.Tensor) -> Path:
    """Write `model`'s forward as TorchScript or ONNX to `output` (through a temporary name: never half a file)."""
    tmp = output.with_name(f".{output.name}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing records forward's one shape test (one-logit binary nets) as a constant: right, as the net is fixed.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        if fmt == "torchscript":
            model.to_torchscript(str(tmp), method="trace", example_inputs=example)
        else:
            # The TorchScript-based exporter: it needs `onnx` only, not the dynamo exporter's onnxscript.
            model.to_onnx(str(tmp), example, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    os.replace(tmp, output)
    return output


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="litlab export", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt_path", required=True,
                   help="a litlab checkpoint, e.g. runs/quickstart/version_0/checkpoints/best.ckpt")
    p.add_argument("--format", choices=tuple(FORMATS), default="torchscript")
    p.add_argument("--output", default=None, help="file to write (default: beside the checkpoint, same stem)")
    opts = p.parse_args(sys.argv[2:] if argv is None else argv)
    if opts.format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise fail('--format onnx needs the onnx package: pip install "litlab[onnx]" (or use --format torchscript).')
    ckpt = Path(opts.ckpt_path)
    model, info = load_checkpoint(ckpt)
    output = Path(opts.output) if opts.output else ckpt.with_suffix(FORMATS[opts.format])
    output.parent.mkdir(parents=True, exist_ok=True)
    export(model, opts.format, output, torch.zeros(2, *info["input_shape"]))
    info.update(format=opts.format, checkpoint=str(ckpt), input="float32 [N, C, H, W], (pixel / 255 - mean) / std",
                output="logits [N, num_classes]")
    write_json_atomic(output.with_name(output.name + ".json"), info)
    print(f"Wrote {output} and {output.name}.json")
    return output
