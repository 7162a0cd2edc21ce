"""Losses: how much each training example counts (`weighting`) and which triplets a batch trains on (`mining`)."""

from lit_models.losses.weighting import (ClassWeights, Compose, ConfidenceWeights, Focal, OHEM, SelfPaced,
                                         Weighting, class_weights)

__all__ = ["ClassWeights", "Compose", "ConfidenceWeights", "Focal", "OHEM", "SelfPaced", "Weighting", "class_weights"]
