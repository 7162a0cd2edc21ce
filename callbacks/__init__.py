"""Callbacks by role: `analysis/` writes figures into the run directory and never changes training; `training/`
changes how a run trains or stops. Configs name them by the short paths here (`callbacks.ConfusionMatrix`).

Imported lazily (PEP 562): `callbacks.Saliency` in a config imports its module (and captum, scikit-learn,
matplotlib) only when used, so runs without analysis callbacks don't pay for them.
"""

from importlib import import_module

_WHERE = {
    # analysis
    "ConfusionMatrix": "callbacks.analysis.confusion",
    "EmbeddingProjection": "callbacks.analysis.embeddings",
    "GradCAM": "callbacks.analysis.gradcam",
    "GradientNorms": "callbacks.analysis.gradients",
    "HiddenRepresentations": "callbacks.analysis.representations",
    "LearningCurves": "callbacks.analysis.curves",
    "MisclassifiedGallery": "callbacks.analysis.gallery",
    "PermutationImportance": "callbacks.analysis.permutation",
    "Saliency": "callbacks.analysis.saliency",
    "TransferGallery": "callbacks.analysis.transfer_gallery",
    "WeightTemplates": "callbacks.analysis.weights",
    # training behaviour
    "Accelerate": "callbacks.training.accelerate",
    "CollapseGuard": "callbacks.training.collapse",
    "Curriculum": "callbacks.training.curriculum",
    "DivergenceGuard": "callbacks.training.divergence",
    "EncoderFinetuning": "callbacks.training.finetuning",
    "LitlabCheckpoint": "callbacks.training.checkpoint",
    "StepMetrics": "callbacks.training.step_metrics",
    "WindowEarlyStopping": "callbacks.training.early_stopping",
    # what a command writes
    "PredictionsCSV": "callbacks.predictions",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'callbacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
