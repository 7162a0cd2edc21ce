"""PredictionsCSV: `litlab predict` writes `<run dir>/predictions.csv`, one row per image file.

The data module reads the files (`--data.predict_path`, datamodules/images.py) and serves batches of
(normalised images, position in `predict_files`); the model's `predict_step` returns class probabilities
`[B, num_classes]`. Rows: file, predicted class name, top-3 classes with probabilities, and an `error` column
for files that could not be read; those also end the command with one `litlab:` line naming them (non-zero
exit) after the others are written. Without `predict_path` the test split is predicted and rows are named
`test[<index>]`, with the true class.
"""

from __future__ import annotations

import csv
import io
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from runtime.files import run_dir, write_atomic
from datamodules.images import ImageFileError

# TensorBatches are not DataLoaders, so Lightning cannot list a batch's sample indices for writers; this writer
# carries them in the batch itself (batch[1]), so Lightning's warning about it says nothing.
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
TOP = 3
HEADER = ["file", "predicted", "probability", "top2", "top2_probability", "top3", "top3_probability", "true", "error"]


class PredictionsCSV(BasePredictionWriter):
    """Collects every predict batch's top-3 classes and writes `predictions.csv` into the run directory."""

    def __init__(self, filename: str = "predictions.csv") -> None:
        """
        Args:
            filename: Name of the CSV written into the run directory.
        """
        super().__init__(write_interval="batch")
        self.filename = filename
        self.rows: list[list[Any]] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        dm = trainer.datamodule
        names = list(dm.class_names)
        if not isinstance(prediction, Tensor) or prediction.ndim != 2 or prediction.shape[1] != len(names):
            got = tuple(prediction.shape) if isinstance(prediction, Tensor) else type(prediction).__name__
            raise ValueError(f"predictions.csv needs class probabilities [batch, {len(names)}] from the model's "
                             f"predict_step; {type(pl_module).__name__} returned {got}.")
        probs, classes = prediction.float().topk(min(TOP, len(names)), dim=1)  # [B, 3] each
        second = batch[1].tolist()  # positions in predict_files, or the test split's labels
        for i, (p, c) in enumerate(zip(probs.tolist(), classes.tolist())):
            if dm.predict_files:
                name, true = dm.predict_files[second[i]], ""
            else:
                name, true = f"test[{len(self.rows)}]", names[second[i]]
            top = [v for k in range(TOP) for v in ((names[c[k]], round(p[k], 6)) if k < len(c) else ("", ""))]
            self.rows.append([name, *top, true, ""])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        errors = dict(trainer.datamodule.predict_errors)
        if trainer.is_global_zero:
            rows = self.rows + [[f, "", "", "", "", "", "", "", e] for f, e in errors.items()]
            buf = io.StringIO()
            csv.writer(buf).writerows([HEADER, *rows])
            path = write_atomic(run_dir(trainer) / self.filename, buf.getvalue())
            print(f"Wrote {path} ({len(self.rows)} predicted, {len(errors)} unreadable)")
        if errors:
            raise ImageFileError(f"{len(errors)} of {len(errors) + len(self.rows)} files could not be predicted "
                                 f"(the others are in {self.filename}): " + " ".join(errors.values()))

