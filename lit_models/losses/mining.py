"""Triplet mining from a labelled batch: which (anchor, positive, negative) index triples to train on.

All three strategies work on the batch's label masks (and, for the hard ones, its [B, B] distance matrix) with
no Python loop over examples. Each returns three int64 index tensors of equal length T into the batch, with
labels[a] == labels[p], a != p and labels[n] != labels[a]; anchors without a positive or a negative in the
batch are skipped (T can be 0, e.g. a batch of one class).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Mining = Literal["random", "batch_hard", "semi_hard"]
Triplets = tuple[Tensor, Tensor, Tensor]


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(positive, negative) bool [B, B] masks: same label and not itself; different label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def random_triplets(labels: Tensor, generator: torch.Generator | None = None) -> Triplets:
    """One triplet per anchor: a uniformly random positive and a uniformly random negative."""
    pos, neg = label_masks(labels)
    anchors = (pos.any(1) & neg.any(1)).nonzero().squeeze(1)
    # argmax of uniform scores restricted to a mask = a uniform draw from that mask's True entries.
    scores = torch.rand(pos.shape, generator=generator).to(labels.device)  # drawn on the CPU: seeded anywhere
    p = scores.masked_fill(~pos, -1.0).argmax(1)
    n = scores.masked_fill(~neg, -1.0).argmax(1)
    return anchors, p[anchors], n[anchors]


def batch_hard_triplets(dist: Tensor, labels: Tensor) -> Triplets:
    """One triplet per anchor: its farthest positive and its nearest negative (Hermans et al., 2017)."""
    pos, neg = label_masks(labels)
    anchors = (pos.any(1) & neg.any(1)).nonzero().squeeze(1)
    p = dist.masked_fill(~pos, float("-inf")).argmax(1)
    n = dist.masked_fill(~neg, float("inf")).argmin(1)
    return anchors, p[anchors], n[anchors]


def semi_hard_triplets(dist: Tensor, labels: Tensor) -> Triplets:
    """Every (anchor, positive) pair with its semi-hard negative (FaceNet, Schroff et al., 2015).

    The semi-hard negative is the nearest negative still farther than the positive, d(a,n) > d(a,p); it lies in
    the margin band (loss > 0) or beyond (loss 0). An anchor with no negative that far gets its farthest
    negative instead (the least hard of those closer than the positive), as TensorFlow Addons does.
    Memory: [P, B] floats for P positive pairs (~B²/classes), so keep batches to a few hundred.
    """
    pos, neg = label_masks(labels)
    a, p = pos.nonzero(as_tuple=True)  # [P] each
    d_ap = dist[a, p]  # [P]
    d_an, neg_a = dist[a], neg[a]  # [P, B]
    outside = neg_a & (d_an > d_ap[:, None])
    nearest_outside = d_an.masked_fill(~outside, float("inf")).argmin(1)
    farthest_inside = d_an.masked_fill(~neg_a, float("-inf")).argmax(1)
    n = torch.where(outside.any(1), nearest_outside, farthest_inside)
    keep = neg_a.any(1)
    return a[keep], p[keep], n[keep]


def mine_triplets(embeddings: Tensor, labels: Tensor, mining: Mining,
                  generator: torch.Generator | None = None) -> Triplets:
    """Triplets of `embeddings` [B, D] (labels [B]) by `mining`; distances are Euclidean, never differentiated."""
    if mining == "random":
        return random_triplets(labels, generator)
    dist = torch.cdist(embeddings.detach(), embeddings.detach())  # [B, B]
    if mining == "batch_hard":
        return batch_hard_triplets(dist, labels)
    if mining == "semi_hard":
        return semi_hard_triplets(dist, labels)
    raise ValueError(f"Unknown mining {mining!r}: choose random, batch_hard or semi_hard.")
