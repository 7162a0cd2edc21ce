"""Callbacks that write analyses into the run directory and hand each file to every logger."""

from callbacks.gallery import MisclassifiedGallery
from callbacks.permutation import PermutationImportance
from callbacks.representations import HiddenRepresentations
from callbacks.saliency import Saliency
from callbacks.weights import WeightTemplates

__all__ = ["HiddenRepresentations", "MisclassifiedGallery", "PermutationImportance", "Saliency", "WeightTemplates"]
