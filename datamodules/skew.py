"""Seeded ways to make a training split harder: class imbalance and label noise (train split only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def resolve_classes(fractions: Mapping[str, float], class_names: Sequence[str]) -> dict[int, float]:
    """Map `{class name or index: fraction kept}` to `{class index: fraction}`, checking both."""
    resolved: dict[int, float] = {}
    for key, fraction in fractions.items():
        name = str(key)
        if name in class_names:
            index = list(class_names).index(name)
        elif name.isdigit() and int(name) < len(class_names):
            index = int(name)
        else:
            raise ValueError(f"imbalance: unknown class {name!r}; use one of {list(class_names)} (or an index).")
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"imbalance: the fraction of class {name!r} kept must be in [0, 1], got {fraction}.")
        resolved[index] = float(fraction)
    return resolved


def resolve_subset(classes: Sequence[str | int] | None, class_names: Sequence[str]) -> list[int] | None:
    """Original class indices of a `classes` subset, in the given order: a name of `class_names`, else an int
    (or digit string) index. None (or the full list in its own order) means keep everything."""
    if classes is None:
        return None
    names = list(class_names)
    indices: list[int] = []
    for key in classes:
        if str(key) in names:  # names first: MNIST's class "3" is index 3 either way
            index = names.index(str(key))
        elif isinstance(key, int) or str(key).isdigit():
            index = int(key)
            if not 0 <= index < len(names):
                raise ValueError(f"classes: index {key} is out of range; this data set has {len(names)} classes.")
        else:
            raise ValueError(f"classes: unknown class {key!r}; use names from {names} (or their indices).")
        if index in indices:
            raise ValueError(f"classes: {key!r} is listed twice in {list(classes)}.")
        indices.append(index)
    if len(indices) < 2:
        raise ValueError(f"classes: a classifier needs at least 2 classes, got {list(classes)}.")
    return None if indices == list(range(len(names))) else indices


def keep_fraction_of_classes(labels: Tensor, fractions: Mapping[int, float], generator: torch.Generator) -> Tensor:
    """Positions into `labels [N]` to keep: round(f · n_c) random examples of each class c in `fractions`, all
    of the other classes. Returned sorted, so the kept examples stay in their original order."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    for c, fraction in fractions.items():
        members = (labels == c).nonzero().flatten()
        n_keep = int(fraction * len(members) + 0.5)
        dropped = members[torch.randperm(len(members), generator=generator)[n_keep:]]
        keep[dropped] = False
    return keep.nonzero().flatten()


def flip_labels(labels: Tensor, fraction: float, num_classes: int, generator: torch.Generator) -> Tensor:
    """A copy of `labels [N]` with round(fraction · N) random labels changed to a *different* random class
    (uniform over the other num_classes − 1), so exactly that many labels are wrong."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {fraction}.")
    noisy = labels.clone()
    n_flip = int(fraction * len(labels) + 0.5)
    if n_flip == 0:
        return noisy
    if num_classes < 2:
        raise ValueError("label_noise needs at least 2 classes to flip a label to a different one.")
    which = torch.randperm(len(labels), generator=generator)[:n_flip]
    # Adding 1..C-1 modulo C never lands on the original class and reaches every other class equally often.
    shift = torch.randint(1, num_classes, (n_flip,), generator=generator)
    noisy[which] = (labels[which] + shift) % num_classes
    return noisy
