"""Saliency: gradient saliency and Integrated Gradients (captum) for correctly and wrongly classified examples."""

from __future__ import annotations

from typing import Literal

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency as CaptumSaliency
from torch import Tensor, nn

from callbacks.analysis.figures import save_figure, save_table
from callbacks.analysis.testset import Predictions, black_image, class_names, display_images, evaluating, gradients, \
    split_predictions


def attributions(
    model: nn.Module, x: Tensor, target: Tensor, baseline: Tensor, n_steps: int = 50
) -> tuple[Tensor, Tensor]:
    """Gradient saliency |d logit_target / d x| and Integrated Gradients from `baseline`, both [N, C, H, W].

    Works inside `trainer.test` (inference mode): inputs are cloned under `gradients()`. Captum takes input
    gradients with `torch.autograd.grad`, so the parameters' `.grad` are left untouched.
    """
    with evaluating(model), gradients():
        inputs = x.detach().clone().requires_grad_(True)
        target, baseline = target.clone(), baseline.detach().clone().expand_as(inputs)
        saliency = CaptumSaliency(model).attribute(inputs, target=target, abs=True)
        ig = IntegratedGradients(model).attribute(inputs, baselines=baseline, target=target, n_steps=n_steps)
    return saliency.detach(), ig.detach()


def pick(mask: Tensor, n: int, seed: int) -> Tensor:
    """Up to `n` seeded-random positions where `mask` is true, sorted."""
    where = mask.nonzero().squeeze(1)
    order = torch.randperm(len(where), generator=torch.Generator().manual_seed(seed))[:n]
    return where[order.to(where.device)].sort().values


class Saliency(L.Callback):
    """Gradient saliency and Integrated Gradients (captum) of right and wrong test examples, when test ends.

    Input | saliency | IG for `num_examples` correctly and `num_examples` wrongly classified examples (seeded
    choice), attributing the *predicted* class.

    Writes `figures/saliency_correct.png`, `figures/saliency_wrong.png` and `figures/saliency.csv` (per example:
    attribution sums and the model's logit difference to the baseline, which IG's sum should match).
    The IG baseline is the black image, normalised as the model sees it.
    """

    def __init__(
        self,
        num_examples: int = 8,
        n_steps: int = 50,
        split: Literal["train", "val", "test"] = "test",
        seed: int = 0,
    ) -> None:
        """
        Args:
            num_examples: Examples per group (correct / wrong); fewer when the split has fewer.
            n_steps: Integration steps of Integrated Gradients (captum's Gauss-Legendre rule).
            split: Which split to draw the examples from.
            seed: Seed of the choice of examples.
        """
        if num_examples < 1 or n_steps < 1:
            raise ValueError(f"num_examples and n_steps must be >= 1, got {num_examples} and {n_steps}.")
        self.num_examples, self.n_steps, self.split, self.seed = num_examples, n_steps, split, seed

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        pred = split_predictions(trainer, pl_module, self.split, who=self)
        names = class_names(trainer, pred.probs.shape[1], self)
        baseline = black_image(trainer, pred.x.shape[1:], pred.x.device, self)
        rows = []
        for group, mask in (("correct", pred.correct), ("wrong", ~pred.correct)):
            chosen = pick(mask, self.num_examples, self.seed)
            if len(chosen) == 0:
                continue
            target = pred.preds[chosen]
            sal, ig = attributions(pl_module, pred.x[chosen], target, baseline, self.n_steps)
            with evaluating(pl_module), torch.inference_mode():
                gain = (pl_module(pred.x[chosen]) - pl_module(baseline)).gather(1, target[:, None]).squeeze(1)
            for j, pos in enumerate(chosen.tolist()):
                rows.append([int(pred.index[pos]), group, names[int(pred.y[pos])], names[int(target[j])],
                             round(float(pred.confidence[pos]), 6), float(sal[j].sum()), float(ig[j].sum()),
                             float(gain[j])])
            self._plot(trainer, pred, chosen, sal, ig, names, group)
        save_table(trainer, "saliency", ["index", "group", "true", "predicted", "confidence", "saliency_sum",
                                         "ig_sum", "logit_minus_baseline_logit"], rows)

    def _plot(self, trainer: L.Trainer, pred: Predictions, chosen: Tensor, sal: Tensor, ig: Tensor,
              names: list[str], group: str) -> None:
        images = display_images(trainer, pred.x[chosen], self)
        # One map per example: saliency's largest channel gradient, IG's sum over channels (it adds up).
        sal_map = sal.amax(1).cpu().numpy()  # [n, H, W], >= 0
        ig_map = ig.sum(1).cpu().numpy()  # [n, H, W], signed
        n = len(chosen)
        fig, axes = plt.subplots(3, n, figsize=(1.6 * n + 1.6, 5.8), squeeze=False, layout="constrained")
        sal_max = float(sal_map.max()) or 1.0
        ig_max = float(np.abs(ig_map).max()) or 1.0  # symmetric scale: white is 0
        for j, pos in enumerate(chosen.tolist()):
            t, p, c = int(pred.y[pos]), int(pred.preds[pos]), float(pred.confidence[pos])
            axes[0, j].imshow(images[j], cmap="gray" if images[j].ndim == 2 else None, vmin=0, vmax=1)
            axes[0, j].set_title(f"#{int(pred.index[pos])}\n{names[t]} → {names[p]} (p={c:.2f})", fontsize=8)
            im_sal = axes[1, j].imshow(sal_map[j], cmap="hot", vmin=0, vmax=sal_max)
            im_ig = axes[2, j].imshow(ig_map[j], cmap="bwr", vmin=-ig_max, vmax=ig_max)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        for r, label in enumerate(("input", "saliency\n|∂logit/∂x|", "integrated\ngradients")):
            axes[r, 0].set_ylabel(label, fontsize=9)
        fig.colorbar(im_sal, ax=axes[1, :].tolist(), shrink=0.9, label="gradient")
        fig.colorbar(im_ig, ax=axes[2, :].tolist(), shrink=0.9, label="attribution")
        title = (f"Saliency and Integrated Gradients of the predicted class: {n} {group}ly classified "
                 f"{self.split} examples\n(titles: #index, true → predicted (confidence); IG baseline: black "
                 f"image, {self.n_steps} steps; red raises the predicted logit, blue lowers it)")
        fig.suptitle(title, fontsize=9)
        save_figure(trainer, fig, f"saliency_{group}", title)
