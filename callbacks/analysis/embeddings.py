"""EmbeddingProjection: t-SNE and PCA of a model's test-set embeddings, coloured by class.

The embeddings come from the test step's outputs (`outputs["embeddings"]`, [B, D], as
`lit_models.TripletEncoder` returns them), so the model runs once. Files: `figures/embeddings.png`
(PCA | t-SNE) and `figures/embeddings.csv` (index, class, k-NN prediction, the 2-D coordinates), plus the
silhouette score of the embeddings by class (cosine; 1 = tight separated clusters, 0 = overlapping) in the
figure's title and `figures/embeddings_silhouette.txt`.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits
from torch import Tensor

from callbacks.analysis.figures import save_figure, save_table, save_text
from callbacks.analysis.representations import project, scatter_by_class
from callbacks.analysis.testset import class_names, subsample


class EmbeddingProjection(L.Callback):
    """PCA + t-SNE of test embeddings (from the test step's `embeddings` output) coloured by true class."""

    def __init__(self, max_points: int = 2000, tsne: bool = True, seed: int = 0, threads: int | None = 1) -> None:
        """
        Args:
            max_points: Project a seeded subset of this many test examples (t-SNE's time grows with it).
            tsne: Also compute t-SNE (seconds); PCA is always drawn.
            seed: Seed of the subset, PCA and t-SNE.
            threads: CPU threads for PCA/t-SNE; 1 (default) gives the same t-SNE everywhere and avoids OpenMP
                threads spinning on a busy machine; None uses all.
        """
        if max_points < 5:
            raise ValueError(f"max_points must be >= 5, got {max_points}.")
        self.max_points, self.tsne, self.seed, self.threads = max_points, tsne, seed, threads
        self._chunks: list[tuple[Tensor, Tensor, Tensor]] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._chunks = []

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, dict) or "embeddings" not in outputs:
            raise ValueError(
                f"EmbeddingProjection needs test_step outputs with 'embeddings' ({type(pl_module).__name__} "
                "returns none): use it with lit_models.TripletEncoder, or HiddenRepresentations for a "
                "classifier's hidden layers."
            )
        y = outputs.get("targets", batch[1])
        preds = outputs.get("preds", torch.full_like(y, -1))
        self._chunks.append((outputs["embeddings"].detach().float().cpu(), y.cpu(), preds.cpu()))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self._chunks:
            return
        z, y, preds = (torch.cat(parts) for parts in zip(*self._chunks))  # [N, D], [N], [N]
        self._chunks = []
        index = subsample(len(y), self.max_points, self.seed)
        z, y, preds = z[index].numpy(), y[index].numpy(), preds[index].numpy()
        names = class_names(trainer, int(getattr(pl_module.hparams, "num_classes", y.max() + 1)), self)
        with threadpool_limits(limits=self.threads):
            pca, emb = project(z, self.seed, self.tsne)
            silhouette = float(silhouette_score(z, y, metric="cosine")) if len(set(y.tolist())) > 1 else float("nan")
        tsne_cols = emb if emb is not None else np.full_like(pca, np.nan)
        save_table(trainer, "embeddings", ["index", "true", "knn_predicted", "pca_1", "pca_2", "tsne_1", "tsne_2"],
                   [[int(i), names[t], names[p] if p >= 0 else "", *map(float, a), *map(float, b)]
                    for i, t, p, a, b in zip(index.tolist(), y, preds, pca, tsne_cols)])
        save_text(trainer, "embeddings_silhouette.txt", f"{silhouette:.4f}\n")
        panels = [("PCA", pca)] + ([("t-SNE", emb)] if emb is not None else [])
        fig = scatter_by_class(panels, y, names)
        title = (f"{z.shape[1]}-d embeddings of {len(y)} test examples, coloured by class "
                 f"(silhouette {silhouette:.3f})")
        fig.suptitle(title)
        save_figure(trainer, fig, "embeddings", title)
