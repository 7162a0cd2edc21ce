"""HiddenRepresentations: each hidden layer's activations on test examples, projected to 2-D, and per class.

Which layers: the output of every non-linearity module (nn.ReLU, nn.Tanh, ...) inside the net, in the order
they run — in an `nn.Sequential` MLP that is each hidden layer after its activation. Convolutional feature
maps [N, C, H, W] are averaged over space first (one value per channel), so every layer is [N, units].
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from callbacks.analysis.figures import save_figure, save_table
from callbacks.analysis.testset import Predictions, class_names, evaluating, split_predictions
from datamodules.contract import require

NONLINEARITIES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                  nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid)


def hidden_activations(model: nn.Module, x: Tensor, batch_size: int = 1000) -> dict[str, Tensor]:
    """{layer name: float [N, units]} for every non-linearity in `model.net` (or `model`), in running order.

    A module that runs twice in one forward pass is reported twice (`relu`, `relu#2`).
    """
    net = getattr(model, "net", model)
    prefix = "net." if net is not model else ""
    calls: list[tuple[str, Tensor]] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, out: Tensor) -> None:
            out = out.detach()
            calls.append((name, out.mean((2, 3)) if out.dim() == 4 else out.flatten(1)))  # [B, units]
        return record

    handles = [m.register_forward_hook(hook(prefix + n)) for n, m in net.named_modules()
               if isinstance(m, NONLINEARITIES)]
    layers: dict[str, list[Tensor]] = {}
    try:
        with evaluating(model), torch.inference_mode():
            for batch in x.split(batch_size):
                calls.clear()
                model(batch)
                seen: dict[str, int] = {}
                for name, out in calls:
                    seen[name] = seen.get(name, 0) + 1
                    layers.setdefault(name if seen[name] == 1 else f"{name}#{seen[name]}", []).append(out)
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(outs).float().cpu() for name, outs in layers.items()}


def project(features: np.ndarray, seed: int, tsne: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """PCA and t-SNE (on the first 50 principal components, the usual speed-up) to 2-D: [N, 2] each."""
    n, d = features.shape
    pca = PCA(n_components=min(2, n, d), random_state=seed).fit_transform(features)
    pca = np.pad(pca, ((0, 0), (0, 2 - pca.shape[1])))  # a 1-unit layer still gets two columns
    if not tsne or n < 5:
        return pca, None
    reduced = PCA(n_components=min(50, n, d), random_state=seed).fit_transform(features)
    emb = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed).fit_transform(reduced)
    return pca, emb


def scatter_by_class(panels: list[tuple[str, np.ndarray]], y: np.ndarray, names: list[str],
                     wrong: np.ndarray | None = None) -> plt.Figure:
    """One scatter per (method, [N, 2] points) panel, coloured by true class; `wrong` [N] bool marks ×."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 1.6, 6), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for ax, (method, xy) in zip(axes[0], panels):
        for c, cname in enumerate(names):
            sel = y == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=7, alpha=0.7, color=cmap(c % cmap.N), label=cname)
        if wrong is not None:
            ax.scatter(xy[wrong, 0], xy[wrong, 1], s=18, marker="x", color="black", linewidths=0.8,
                       label=f"misclassified ({int(wrong.sum())})")
        ax.set_title(method)
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
    axes[0, -1].legend(title="true class", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=2.5)
    return fig


def class_means(features: Tensor, y: Tensor, mask: Tensor, num_classes: int) -> Tensor:
    """Mean activation per (true) class over the examples where `mask` holds: [num_classes, units], NaN if none."""
    out = torch.full((num_classes, features.shape[1]), float("nan"))
    for k in range(num_classes):
        rows = (y == k) & mask
        if rows.any():
            out[k] = features[rows].mean(0)
    return out


class HiddenRepresentations(L.Callback):
    """Hidden layers' activations on test examples: PCA/t-SNE and mean activation per class, when test ends.

    Per hidden layer: PCA and t-SNE of its activations on `max_points` examples (coloured by true class,
    misclassified marked ×), and its mean activation per class for correctly vs wrongly classified examples.

    The per-class means are a heat map (classes × the `max_units` units whose class means differ most): a
    person can read which units each class switches on, and whether misclassified examples of a class lack
    them. Files per layer `<k>` (1 = first hidden layer): `hidden<k>_projection.png/.csv` (2-D coordinates)
    and `hidden<k>_class_means.png/.csv`.
    """

    def __init__(
        self,
        max_points: int = 2000,
        max_units: int = 32,
        tsne: bool = True,
        split: Literal["train", "val", "test"] = "test",
        seed: int = 0,
        threads: int | None = 1,
    ) -> None:
        """
        Args:
            max_points: Project a seeded subset of this many examples (t-SNE's time grows with it).
            max_units: Units shown in the class-mean heat maps (those whose class means vary most).
            tsne: Also compute t-SNE (seconds per layer); PCA is always drawn.
            split: Which split to analyse.
            seed: Seed of the subset, PCA and t-SNE.
            threads: CPU threads for PCA/t-SNE; None uses all. 1 (default) gives the same t-SNE on every
                machine, and on a busy one avoids OpenMP threads spinning (20x the CPU time measured on 2 shared cores).
        """
        if max_points < 2 or max_units < 1:
            raise ValueError(f"Need max_points >= 2 and max_units >= 1, got {max_points} and {max_units}.")
        self.max_points, self.max_units, self.tsne, self.split, self.seed = max_points, max_units, tsne, split, seed
        self.threads = threads

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        pred = split_predictions(trainer, pl_module, self.split, self.max_points, self.seed, self)
        layers = hidden_activations(pl_module, pred.x, require(trainer, self, "eval_batch_size").eval_batch_size)
        if not layers:
            raise ValueError(f"HiddenRepresentations found no non-linearity module in {type(pl_module).__name__}'s "
                             "net; it hooks nn.ReLU, nn.Tanh, ... modules (functional calls are invisible to it).")
        names = class_names(trainer, pred.probs.shape[1], self)
        for k, (layer, feats) in enumerate(layers.items(), start=1):
            self._projection(trainer, pred, feats, names, k, layer)
            self._class_means(trainer, pred, feats, names, k, layer)

    def _projection(self, trainer: L.Trainer, pred: Predictions, feats: Tensor, names: list[str], k: int,
                    layer: str) -> None:
        y, p, ok = pred.y.cpu().numpy(), pred.preds.cpu().numpy(), pred.correct.cpu().numpy()
        with threadpool_limits(limits=self.threads):
            pca, emb = project(feats.numpy(), self.seed, self.tsne)
        tsne_cols = emb if emb is not None else np.full_like(pca, np.nan)
        save_table(trainer, f"hidden{k}_projection",
                   ["index", "true", "predicted", "correct", "pca_1", "pca_2", "tsne_1", "tsne_2"],
                   [[int(i), names[t], names[q], bool(c), *map(float, a), *map(float, b)]
                    for i, t, q, c, a, b in zip(pred.index.tolist(), y, p, ok, pca, tsne_cols)])
        panels = [("PCA", pca)] + ([("t-SNE", emb)] if emb is not None else [])
        fig = scatter_by_class(panels, y, names, wrong=~ok)
        title = (f"Hidden layer {k} ({layer}, {feats.shape[1]} units) on {len(y)} {self.split} examples: "
                 "colour = true class, × = misclassified")
        fig.suptitle(title)
        save_figure(trainer, fig, f"hidden{k}_projection", title)

    def _class_means(self, trainer: L.Trainer, pred: Predictions, feats: Tensor, names: list[str], k: int,
                     layer: str) -> None:
        y, ok = pred.y.cpu(), pred.correct.cpu()
        right = class_means(feats, y, ok, len(names))
        wrong = class_means(feats, y, ~ok, len(names))
        # The units that tell classes apart most: largest variance of their class means (correct examples).
        units = right.nan_to_num(0).var(0).argsort(descending=True)[: self.max_units].sort().values
        right, wrong = right[:, units], wrong[:, units]
        counts = [[int(((y == c) & m).sum()) for c in range(len(names))] for m in (ok, ~ok)]
        save_table(trainer, f"hidden{k}_class_means", ["true_class", "group", "n", "unit", "mean_activation"],
                   [[names[c], g, counts[gi][c], int(u), float(means[c, j])]
                    for gi, (g, means) in enumerate((("correct", right), ("misclassified", wrong)))
                    for c in range(len(names)) for j, u in enumerate(units.tolist())])
        both = torch.cat([right, wrong])
        lo, hi = float(both.nan_to_num(0).min()), float(both.nan_to_num(0).max())
        signed = lo < 0  # tanh-like: diverging map around 0; ReLU/sigmoid: sequential
        vmax = max(abs(lo), abs(hi)) if signed else hi
        fig, axes = plt.subplots(1, 2, figsize=(0.22 * len(units) * 2 + 3.5, 0.35 * len(names) + 2.2),
                                 layout="constrained")
        for ax, means, group, n in zip(axes, (right, wrong), ("correctly classified", "misclassified"), counts):
            cm = plt.get_cmap("RdBu_r" if signed else "viridis").with_extremes(bad="lightgrey")
            im = ax.imshow(np.ma.masked_invalid(means.numpy()), cmap=cm, aspect="auto",
                           vmin=-vmax if signed else min(lo, 0.0), vmax=vmax)
            ax.set_title(f"{group} ({sum(n)} examples)", fontsize=10)
            ax.set_xticks(range(len(units)), [str(u) for u in units.tolist()], rotation=90, fontsize=6)
            ax.set_xlabel("unit (the most class-specific ones)")
            ax.set_yticks(range(len(names)), [f"{nm} (n={c})" for nm, c in zip(names, n)], fontsize=8)
            ax.set_ylabel("true class (examples)")
        fig.colorbar(im, ax=axes.tolist(), label="mean activation")
        title = (f"Hidden layer {k} ({layer}): mean activation per true class, correct vs misclassified "
                 "(grey: no examples)")
        fig.suptitle(title, fontsize=10)
        save_figure(trainer, fig, f"hidden{k}_class_means", title)
