"""Callbacks that write analyses into the run directory and hand each file to every logger.

Imported lazily (PEP 562): `callbacks.Saliency` in a config imports its module (and captum, scikit-learn)
only when used, so runs without analysis callbacks — and `callbacks.artifacts`, which every run imports —
don't pay for them.
"""

from importlib import import_module

_WHERE = {
    "Accelerate": "callbacks.accelerate",
    "CollapseGuard": "callbacks.collapse",
    "ConfusionMatrix": "callbacks.confusion",
    "DivergenceGuard": "callbacks.divergence",
    "EmbeddingProjection": "callbacks.embeddings",
    "EncoderFinetuning": "callbacks.finetuning",
    "GradCAM": "callbacks.gradcam",
    "TransferGallery": "callbacks.transfer_gallery",
    "GradientNorms": "callbacks.gradients",
    "HiddenRepresentations": "callbacks.representations",
    "LearningCurves": "callbacks.curves",
    "LitlabCheckpoint": "callbacks.resume",
    "MisclassifiedGallery": "callbacks.gallery",
    "PermutationImportance": "callbacks.permutation",
    "Saliency": "callbacks.saliency",
    "WeightTemplates": "callbacks.weights",
    "WindowEarlyStopping": "callbacks.early_stopping",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'callbacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
