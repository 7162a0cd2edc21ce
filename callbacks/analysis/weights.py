"""WeightTemplates: what the first layer learned, each unit's weights drawn as an image."""

from __future__ import annotations

import math

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor, nn

from callbacks.analysis.figures import save_figure, save_table
from callbacks.analysis.testset import grid_shape
from datamodules.contract import require


def first_layer(module: nn.Module) -> tuple[str, nn.Linear | nn.Conv2d | Tensor]:
    """The first `nn.Linear` or `nn.Conv2d` in `module.net` (or `module`), in registration order; or, for a net
    without such layers that defines `first_layer_weight()` (e.g. `lit_models.ScratchNet`), that weight in
    nn.Linear's layout [units, inputs].

    litlab's nets register layers in the order they run (an `nn.Sequential`, or children set in `__init__`).
    """
    net = getattr(module, "net", module)
    prefix = "net." if net is not module else ""
    if callable(getattr(net, "first_layer_weight", None)):
        return prefix + "first_layer_weight()", net.first_layer_weight()
    for name, m in net.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return prefix + name, m
    raise ValueError(f"WeightTemplates found no nn.Linear or nn.Conv2d in {type(net).__name__} (nor a "
                     "first_layer_weight() method returning its first layer's weights as [units, inputs]).")


def templates(layer: nn.Linear | nn.Conv2d | Tensor, input_shape: tuple[int, ...]) -> Tensor:
    """One image per unit: Linear [out, C*H*W] (or such a weight tensor) -> [out, C, H, W]; Conv2d's kernels
    [out, C, k, k] as they are."""
    w = (layer if isinstance(layer, Tensor) else layer.weight).detach()
    if isinstance(layer, nn.Conv2d):
        return w.clone()
    if w.shape[1] != math.prod(input_shape):
        raise ValueError(
            f"The first Linear layer takes {w.shape[1]} inputs, which is not an image of shape {tuple(input_shape)}; "
            "WeightTemplates needs a first layer that sees the pixels (a Linear on the flattened image or a Conv2d)."
        )
    return w.reshape(len(w), *input_shape).clone()


class WeightTemplates(L.Callback):
    """The first Linear/Conv2d layer's weights as images, one tile per unit, when fit and when test end.

    Grey images get a diverging colour map symmetric around 0 (shared by all tiles, with a colour bar): red
    pixels push the unit up, blue ones down. Colour images are drawn as RGB with grey = 0. The test-end figure
    (the tested checkpoint) replaces the fit-end one (the last weights) in `figures/weight_templates.png`;
    `weight_templates.csv` holds each unit's weight norm and range.
    """

    def __init__(self, max_units: int = 64, max_cols: int = 8) -> None:
        """
        Args:
            max_units: Show the first this-many units of the layer.
            max_cols: Columns of the grid.
        """
        if max_units < 1 or max_cols < 1:
            raise ValueError(f"max_units and max_cols must be >= 1, got {max_units} and {max_cols}.")
        self.max_units, self.max_cols = max_units, max_cols

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module, "at the end of fit")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module, "of the tested model")

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        if not trainer.is_global_zero:
            return
        input_shape = tuple(getattr(pl_module.hparams, "input_shape", None) or require(trainer, self, "input_shape").input_shape)
        name, layer = first_layer(pl_module)
        tiles = templates(layer, input_shape).float().cpu()  # [units, C, h, w]
        units = len(tiles)
        flat = tiles.flatten(1)
        save_table(trainer, "weight_templates", ["unit", "l2_norm", "min", "max", "mean"],
                   [[u, float(r.norm()), float(r.min()), float(r.max()), float(r.mean())] for u, r in enumerate(flat)])
        tiles = tiles[: self.max_units]
        vmax = float(tiles.abs().max()) or 1.0
        rows, cols = grid_shape(len(tiles), self.max_cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1.2, 1.4 * rows + 0.8), squeeze=False,
                                 layout="constrained")
        for ax in axes.flat:
            ax.axis("off")
        im = None
        for u, (ax, tile) in enumerate(zip(axes.flat, tiles)):
            if tile.shape[0] == 1:
                im = ax.imshow(tile[0].numpy(), cmap="bwr", vmin=-vmax, vmax=vmax)
            else:  # colour: [-vmax, vmax] -> [0, 1] per channel, so grey is 0
                ax.imshow(np.clip(tile.permute(1, 2, 0).numpy() / (2 * vmax) + 0.5, 0, 1))
            ax.set_title(f"unit {u}", fontsize=8)
        if im is not None:
            fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="weight")
        kind = "kernels" if isinstance(layer, nn.Conv2d) else "weights reshaped to the input image"
        layer_type = "weights" if isinstance(layer, Tensor) else type(layer).__name__
        title = (f"First layer ({name}: {layer_type}, {units} units) {kind}, {when}; "
                 f"first {len(tiles)} units")
        fig.suptitle(title, fontsize=10)
        save_figure(trainer, fig, "weight_templates", title)

