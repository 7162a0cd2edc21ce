"""GradCAM: Grad-CAM (captum's LayerGradCam) on a conv net's last convolution, for a few test examples."""

from __future__ import annotations

from typing import Literal

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import Tensor, nn

from callbacks.analysis.figures import save_figure, save_table
from callbacks.analysis.saliency import pick
from callbacks.analysis.testset import Predictions, class_names, display_images, evaluating, gradients, split_predictions


def last_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """The last `nn.Conv2d` in `module.net` (or `module`), in registration order (litlab's nets register layers
    in the order they run): the layer whose feature maps Grad-CAM weighs."""
    net = getattr(module, "net", module)
    prefix = "net." if net is not module else ""
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"GradCAM needs a convolutional net: {type(net).__name__} has no nn.Conv2d. Use "
                         "callbacks.Saliency for MLPs.")
    name, layer = convs[-1]
    return prefix + name, layer


def grad_cam(model: nn.Module, layer: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Grad-CAM of class `target` [N] at `layer`'s output resolution: [N, h, w] = ReLU(Σ_k α_k A_k), with A_k
    the layer's k-th feature map and α_k the spatial mean of d logit_target / d A_k.

    Works inside `trainer.test` (inference mode): inputs are cloned under `gradients()`. Captum takes the
    gradients with `torch.autograd.grad`, so the parameters' `.grad` are left untouched.
    """
    with evaluating(model), gradients():
        inputs = x.detach().clone().requires_grad_(True)
        cam = LayerGradCam(model, layer).attribute(inputs, target=target.clone(), relu_attributions=True)
    return cam.detach()[:, 0]


def upsample(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """[N, h, w] maps bilinearly resized to the input's [N, H, W] (to lay over the image)."""
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


class GradCAM(L.Callback):
    """Grad-CAM of the predicted class for `num_examples` test examples (seeded choice), when test ends.

    The maps come from the last `nn.Conv2d` of the net (LeNet-5: the second convolution, 8x8 on MNIST) and are
    upsampled to the input. Writes `figures/gradcam.png` (input | map laid over the input, each map scaled to
    its own maximum) and `figures/gradcam.csv`, the unscaled maps at the layer's resolution: one row per
    (example, map row, map column).
    """

    def __init__(
        self, num_examples: int = 8, split: Literal["train", "val", "test"] = "test", seed: int = 0,
        alpha: float = 0.5,
    ) -> None:
        """
        Args:
            num_examples: How many examples to show (fewer when the split has fewer).
            split: Which split to draw the examples from.
            seed: Seed of the choice of examples.
            alpha: Opacity of the heat map over the image.
        """
        if num_examples < 1 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Need num_examples >= 1 and 0 <= alpha <= 1, got {num_examples} and {alpha}.")
        self.num_examples, self.split, self.seed, self.alpha = num_examples, split, seed, alpha

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        name, layer = last_conv(pl_module)
        pred = split_predictions(trainer, pl_module, self.split, who=self)
        chosen = pick(torch.ones_like(pred.y, dtype=torch.bool), self.num_examples, self.seed)
        target = pred.preds[chosen]
        cam = grad_cam(pl_module, layer, pred.x[chosen], target)  # [n, h, w]
        names = class_names(trainer, pred.probs.shape[1], self)
        rows = []
        for j, pos in enumerate(chosen.tolist()):
            head = [int(pred.index[pos]), names[int(pred.y[pos])], names[int(target[j])],
                    round(float(pred.confidence[pos]), 6)]
            rows += [[*head, r, c, float(v)] for (r, c), v in np.ndenumerate(cam[j].cpu().numpy())]
        save_table(trainer, "gradcam", ["index", "true", "predicted", "confidence", "row", "col", "cam"], rows)
        self._plot(trainer, pred, chosen, upsample(cam, tuple(pred.x.shape[-2:])), names, name, tuple(cam.shape[1:]))

    def _plot(self, trainer: L.Trainer, pred: Predictions, chosen: Tensor, cam: Tensor, names: list[str],
              layer: str, size: tuple[int, int]) -> None:
        images = display_images(trainer, pred.x[chosen], self)
        maps = cam.cpu().numpy()
        maps = maps / np.maximum(maps.reshape(len(maps), -1).max(1), 1e-12)[:, None, None]  # each to [0, 1]
        n = len(chosen)
        fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 1.6, 4.2), squeeze=False, layout="constrained")
        im = None
        for j, pos in enumerate(chosen.tolist()):
            t, p, c = int(pred.y[pos]), int(pred.preds[pos]), float(pred.confidence[pos])
            grey = images[j].ndim == 2
            for ax in axes[:, j]:
                ax.imshow(images[j], cmap="gray" if grey else None, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[0, j].set_title(f"#{int(pred.index[pos])}\n{names[t]} → {names[p]} (p={c:.2f})", fontsize=8)
            im = axes[1, j].imshow(maps[j], cmap="jet", alpha=self.alpha, vmin=0, vmax=1)
        axes[0, 0].set_ylabel("input", fontsize=9)
        axes[1, 0].set_ylabel("Grad-CAM", fontsize=9)
        if im is not None:
            fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.9, label="Grad-CAM / its max")
        title = (f"Grad-CAM of the predicted class at {layer} ({size[0]}x{size[1]} maps, upsampled): {n} "
                 f"{self.split} examples\n(titles: #index, true → predicted (confidence); each map scaled to its "
                 f"own maximum; the CSV holds the unscaled maps)")
        fig.suptitle(title, fontsize=9)
        save_figure(trainer, fig, "gradcam", title)
