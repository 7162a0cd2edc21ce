"""TransferGallery: test images this run's model classifies correctly and a reference run's model gets wrong.

Report 001-h ("Visualize 5 samples correctly classified by your best baseline but misclassified by your worst"),
as a figure made inside the best baseline's run, so `litlab reproduce` (or any sweep) leaves it in the run:

    litlab fit ... --trainer.callbacks+=callbacks.TransferGallery \
        --trainer.callbacks.reference runs/<worst run dir>

When test ends (`fit` tests its best checkpoint), the reference run's `checkpoints/best.ckpt` is loaded into a
copy of this run's net (the two runs must share the architecture: a learning rate, a baseline mode or pretrained
weights may differ) and both predict the same split. Writes `figures/transfer_gallery.png` (each image with the
true class and both predictions; the reference's most confident mistakes first) and `transfer_gallery.csv`.
`scripts/transfer_gallery.py` does the same afterwards from two finished run directories.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from callbacks.analysis.figures import plt, save_figure, save_table
from runtime.files import run_dir
from callbacks.analysis.testset import class_names, display_images, evaluating, grid_shape, split_predictions
from datamodules.contract import require


def baseline_label(mode: str | None, lr: Any, pretrained: Any) -> str:
    """`fine tuning lr=0.0001`, `scratch lr=0.01`, `linear probe lr=0.01`: a randomly initialised backbone
    trained end to end (mode scratch, or finetune of pretrained: false) is the scratch baseline."""
    if mode == "scratch" or (mode == "finetune" and pretrained is False):
        name = "scratch"
    else:
        name = {"finetune": "fine tuning", "linear_probe": "linear probe"}.get(mode or "", mode or "model")
    return f"{name} lr={lr:g}" if isinstance(lr, (int, float)) else name


def label_from_config(run: Path) -> str:
    """The baseline of a finished run, from its `config.yaml` (its directory name when that is missing)."""
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return run.name
    model = (cfg.get("model") or {}).get("init_args") or {}
    encoder = (((model.get("net") or {}).get("init_args") or {}).get("encoder") or {})
    modes = [c.get("init_args", {}).get("mode") for c in (cfg.get("trainer") or {}).get("callbacks") or []
             if isinstance(c, dict) and str(c.get("class_path", "")).endswith("EncoderFinetuning")]
    pretrained = encoder.get("init_args", {}).get("pretrained") if isinstance(encoder, dict) else None
    return baseline_label(modes[0] if modes else None, model.get("lr"), pretrained)


class TransferGallery(L.Callback):
    """`k` test images this run's tested model gets right and the `reference` run's model gets wrong."""

    def __init__(self, reference: str | None = None, k: int = 5,
                 split: Literal["train", "val", "test"] = "test") -> None:
        """
        Args:
            reference: The reference (worst) run's directory, holding `checkpoints/best.ckpt` and `config.yaml`.
                None, this run's own directory or a run without a checkpoint: no gallery (said in the log), so
                one sweep command can serve both runs of a pair.
            k: How many images to show (fewer when fewer qualify).
            split: Which split to compare on.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        self.reference, self.k, self.split = reference, k, split

    def reference_net(self, pl_module: L.LightningModule, ckpt: Path) -> nn.Module:
        state = torch.load(ckpt, map_location=pl_module.device, weights_only=True)
        state = {k[4:]: v for k, v in state.get("state_dict", state).items() if k.startswith("net.")}
        net = copy.deepcopy(pl_module.net)
        try:
            net.load_state_dict(state)  # strict: every key and shape of this run's net
        except RuntimeError as err:
            raise ValueError(f"TransferGallery: {ckpt} does not fit this run's net (the two runs must share the "
                             f"architecture): {str(err)[:500]}") from None
        return net

    @torch.inference_mode()
    def probs(self, pl_module: L.LightningModule, net: nn.Module, x: Tensor, batch: int) -> Tensor:
        """Class probabilities [N, classes]; a one-logit (binary) net through the module's two-class logits."""
        with evaluating(net):
            out = []
            for b in x.split(batch):
                z = net(b)
                out.append((pl_module.binary_logits(z) if z.shape[-1] == 1 else z).softmax(-1))
        return torch.cat(out)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        own = run_dir(trainer)
        ref = Path(self.reference) if self.reference else None
        if ref is None or ref.resolve() == own.resolve():
            rank_zero_info("TransferGallery: no other reference run (this run is the reference); no gallery.")
            return
        ckpt = ref / "checkpoints" / "best.ckpt"
        if not ckpt.is_file():
            rank_zero_warn(f"TransferGallery: {ckpt} not found (run the reference first); no gallery.")
            return
        pred = split_predictions(trainer, pl_module, self.split, who=self)  # this run: the tested (best) checkpoint
        ref_probs = self.probs(pl_module, self.reference_net(pl_module, ckpt), pred.x,
                               require(trainer, self, "eval_batch_size").eval_batch_size)
        ref_preds, ref_conf = ref_probs.argmax(-1), ref_probs.max(-1).values
        qualify = (pred.correct & (ref_preds != pred.y)).nonzero().squeeze(1)
        chosen = qualify[ref_conf[qualify].argsort(descending=True, stable=True)][: self.k]
        names = class_names(trainer, pred.probs.shape[1], self)
        callbacks = [c for c in trainer.callbacks if type(c).__name__ == "EncoderFinetuning"]
        mine = baseline_label(getattr(callbacks[0], "mode", None) if callbacks else None,
                              pl_module.hparams.get("lr"), getattr(getattr(pl_module.net, "encoder", None),
                                                                   "pretrained", None))
        theirs = label_from_config(ref)
        rows = [[int(pred.index[i]), names[pred.y[i]], names[pred.preds[i]], round(float(pred.confidence[i]), 4),
                 names[ref_preds[i]], round(float(ref_conf[i]), 4)] for i in chosen.tolist()]
        save_table(trainer, "transfer_gallery", ["index", "true", "this_predicted", "this_confidence",
                                                 "reference_predicted", "reference_confidence"], rows)
        title = (f"{len(qualify)} of {len(pred.y)} {self.split} images right by {mine} (this run, accuracy "
                 f"{pred.correct.float().mean():.1%}) and wrong by {theirs} (accuracy "
                 f"{(ref_preds == pred.y).float().mean():.1%}); {len(rows)} shown")
        r, c = grid_shape(max(len(rows), 1), 5)
        fig, axes = plt.subplots(r, c, figsize=(2.6 * c, 3.0 * r + 0.6), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, img, row in zip(axes.flat, display_images(trainer, pred.x[chosen], self), rows):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(f"#{row[0]} true: {row[1]}\n{mine}: {row[2]} ({row[3]:.2f})\n{theirs}: {row[4]} "
                         f"({row[5]:.2f})", fontsize=7)
        fig.suptitle(title, fontsize=9)
        save_figure(trainer, fig, "transfer_gallery", title)
        rank_zero_info(f"TransferGallery: {title} → {own / 'figures' / 'transfer_gallery.png'}")
