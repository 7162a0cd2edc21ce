"""GradientNorms: per-layer gradient L2 norm each step, averaged per epoch, to see vanishing/exploding gradients."""

from __future__ import annotations

from collections import defaultdict

import lightning as L
import matplotlib.pyplot as plt
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from callbacks.analysis.figures import save_figure, save_table


def layer_groups(module: nn.Module, stepped: frozenset[int] = frozenset()) -> tuple[list[str], list[nn.Parameter],
                                                                                    Tensor]:
    """Trainable parameters (requiring grad, or whose id is in `stepped`: those an optimiser steps with hand-set
    gradients, as lit_models.ScratchMLP does) grouped by the module that owns them: (layer names, parameters,
    group of each).

    A layer is a parameter-owning module, named as in `named_parameters` without the last part ("net.1.weight"
    and "net.1.bias" -> "net.1"), so weight and bias of one Linear/Conv2d count together.
    """
    names: list[str] = []
    params: list[nn.Parameter] = []
    group: list[int] = []
    for pname, p in module.named_parameters():
        if not (p.requires_grad or id(p) in stepped):
            continue
        layer = pname.rsplit(".", 1)[0] if "." in pname else pname
        if layer not in names:
            names.append(layer)
        params.append(p)
        group.append(names.index(layer))
    return names, params, torch.tensor(group, dtype=torch.long)


def layer_grad_norms(params: list[nn.Parameter], group: Tensor, num_layers: int) -> Tensor:
    """L2 norm of each layer's gradient, all its parameters together: float32 [num_layers] on the device.

    One fused `_foreach_norm` over the gradients, then sqrt of the summed squares per layer; no host sync.
    A parameter without a gradient this step counts as zero.
    """
    have = [i for i, p in enumerate(params) if p.grad is not None]
    device = params[0].device
    sq = torch.zeros(num_layers, device=device, dtype=torch.float32)
    if have:
        norms = torch.stack(torch._foreach_norm([params[i].grad for i in have])).float()  # [P]
        # Usually every parameter has a gradient and `group` is used as it is (no host-to-device copy).
        index = group if len(have) == len(params) else group.cpu()[have]
        sq.index_add_(0, index.to(device), norms.square())
    return sq.sqrt()


class GradientNorms(L.Callback):
    """Per-layer gradient L2 norm of every training step, averaged per epoch; warns on vanishing/exploding ones.

    Measured in `on_before_optimizer_step`: after backward and after AMP's unscaling, but *before* the Trainer's
    gradient clipping (`gradient_clip_val`), which Lightning applies right after that hook — so the figure shows
    the gradients the loss produced, not the clipped step. Under DDP the gradients are already averaged over
    ranks, so every rank measures the same norms. Each epoch logs `grad_norm/<layer>` (the epoch mean); when fit
    ends it writes `gradient_norms.png` (log-scale y, one line per layer, epoch on x) and `gradient_norms.csv`.
    """

    MAX_LINES = 12  # more layers than this are drawn against depth, one line per epoch

    def __init__(self, vanish_below: float = 1e-7, explode_above: float = 1e3, plot: bool = True) -> None:
        """
        Args:
            vanish_below: Warn when a layer's epoch-mean gradient norm is below this.
            explode_above: Warn when a layer's epoch-mean gradient norm is above this (or not finite).
            plot: Write gradient_norms.png at the end of fit (the CSV is written in any case).
        """
        if not 0 <= vanish_below < explode_above:
            raise ValueError(f"Need 0 <= vanish_below < explode_above, got {vanish_below} and {explode_above}.")
        self.vanish_below, self.explode_above, self.plot = vanish_below, explode_above, plot
        self.layers: list[str] = []
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)  # layer -> [(epoch, mean norm)]
        self._sum: Tensor | None = None  # summed norms of this epoch's steps, [layers], on device
        self._steps = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stepped = frozenset(id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"])
        self.layers, self._params, self._group = layer_groups(pl_module, stepped)
        if not self._params:
            raise ValueError(f"GradientNorms found no trainable parameters in {type(pl_module).__name__}.")
        self._group = self._group.to(self._params[0].device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum, self._steps = None, 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        norms = layer_grad_norms(self._params, self._group, len(self.layers))
        self._sum = norms if self._sum is None else self._sum + norms
        self._steps += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._sum is None:
            return
        means = (self._sum / self._steps).cpu().tolist()  # the one host sync per epoch
        epoch = trainer.current_epoch
        pl_module.log_dict({f"grad_norm/{n}": m for n, m in zip(self.layers, means)})
        for name, m in zip(self.layers, means):
            self.history[name].append((epoch, m))
            if not m <= self.explode_above:  # also catches NaN/inf
                rank_zero_warn(f"GradientNorms: layer {name!r} has exploding gradients in epoch {epoch}: mean L2 "
                               f"norm {m:.3g} > {self.explode_above:g}. Lower the learning rate or set "
                               "trainer.gradient_clip_val.")
            elif m < self.vanish_below:
                rank_zero_warn(f"GradientNorms: layer {name!r} has vanishing gradients in epoch {epoch}: mean L2 "
                               f"norm {m:.3g} < {self.vanish_below:g}. Check its activation/initialisation.")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        save_table(trainer, "gradient_norms", ["epoch", "layer", "mean_l2_norm"],
                   [[e, name, m] for name in self.layers for e, m in self.history[name]])
        if not self.plot:
            return
        kinds = {n: type(m).__name__ for n, m in pl_module.named_modules()}
        fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
        if len(self.layers) <= self.MAX_LINES:  # a line per layer, across epochs
            for name in self.layers:
                epochs, values = zip(*self.history[name])
                ax.plot(epochs, values, marker="o", label=f"{name} ({kinds.get(name, '?')})")
            ax.set_xlabel("epoch")
            legend_title = "layer (module)"
        else:  # a deep net: a line per epoch across depth, where vanishing (or exploding) gradients show as a slope
            epochs = sorted({e for name in self.layers for e, _ in self.history[name]})
            for i, epoch in enumerate(epochs):
                values = [dict(self.history[name]).get(epoch, float("nan")) for name in self.layers]
                shade = plt.cm.viridis(i / max(1, len(epochs) - 1))
                ax.plot(range(len(self.layers)), values, marker=".", ms=3, color=shade, label=f"epoch {epoch}")
            ax.set_xlabel(f"layer index (0 = {self.layers[0]}, nearest the input; {len(self.layers) - 1} = "
                          f"{self.layers[-1]})")
            legend_title = "epoch"
        ax.set_yscale("log")
        ax.set_ylabel("mean gradient L2 norm per step (log scale)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        for y, what in ((self.vanish_below, "vanishing below"), (self.explode_above, "exploding above")):
            lo, hi = ax.get_ylim()
            if lo <= y <= hi:
                ax.axhline(y, color="grey", ls="--", lw=1, label=f"{what} {y:g}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title=legend_title, loc="best")
        title = "Gradient norm per layer, before clipping"
        ax.set_title(title)
        save_figure(trainer, fig, "gradient_norms", title)
