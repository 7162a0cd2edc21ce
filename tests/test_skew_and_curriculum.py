"""Imbalance and label-noise data options, the training batches' pool hook, and the curriculum schedule."""

from __future__ import annotations

import math

import pytest
import torch

from callbacks.training.curriculum import Curriculum
from datamodules import MNIST, TensorBatches
from datamodules.skew import flip_labels, keep_fraction_of_classes
from lit_models.modules.class_metrics import PerClassMetrics


def setup_dm(mnist_dir, **kw):
    dm = MNIST(data_dir=str(mnist_dir), val_size=100, download=False, **kw)
    dm.setup()
    return dm


def test_imbalance_keeps_the_requested_counts_and_leaves_val_and_test_alone(mnist_dir):
    clean = setup_dm(mnist_dir)
    skewed = setup_dm(mnist_dir, imbalance={"3": 0.25, "8": 0.0})
    before, after = clean.train_class_counts(), skewed.train_class_counts()
    assert after[3] == int(0.25 * before[3] + 0.5) and after[8] == 0
    others = [c for c in range(10) if c not in (3, 8)]
    assert torch.equal(after[others], before[others])
    for split in ("val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(clean._splits[split], skewed._splits[split]))
    # Kept examples are real examples of their class (images travel with their labels).
    x_clean, y_clean = clean.split_tensors("train")
    x_skew, y_skew = skewed.split_tensors("train")
    rows = {row.numpy().tobytes(): int(lab) for row, lab in zip(x_clean.flatten(1), y_clean)}
    assert all(rows[row.numpy().tobytes()] == int(lab) for row, lab in zip(x_skew.flatten(1), y_skew))


def test_imbalance_is_seeded_and_checks_its_classes(mnist_dir):
    a, b = (setup_dm(mnist_dir, imbalance={"3": 0.5}, seed=s) for s in (0, 0))
    assert torch.equal(a._splits["train"][0], b._splits["train"][0])
    labels = torch.tensor([0] * 10 + [1] * 10)
    kept = [keep_fraction_of_classes(labels, {1: 0.3}, torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert all(int((labels[k] == 1).sum()) == 3 and int((labels[k] == 0).sum()) == 10 for k in kept)
    assert not torch.equal(kept[0], kept[1])
    with pytest.raises(ValueError, match=r"unknown class 'cat'; use one of \['0', '1'"):
        MNIST(imbalance={"cat": 0.1})
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got 1.5"):
        MNIST(imbalance={"3": 1.5})


def test_label_noise_flips_exactly_the_requested_fraction_to_other_classes(mnist_dir):
    clean = setup_dm(mnist_dir)
    noisy = setup_dm(mnist_dir, label_noise=0.2)
    y_clean, y_noisy = clean._splits["train"][1], noisy._splits["train"][1]
    assert torch.equal(clean._splits["train"][0], noisy._splits["train"][0])  # same images, same order
    assert int((y_clean != y_noisy).sum()) == int(0.2 * len(y_clean) + 0.5)
    assert torch.equal(clean._splits["val"][1], noisy._splits["val"][1])
    assert torch.equal(clean._splits["test"][1], noisy._splits["test"][1])
    assert torch.equal(noisy.train_class_counts(), torch.bincount(y_noisy, minlength=10))
    # Flips land on every other class, never on the original one.
    labels = torch.zeros(3000, dtype=torch.long)
    flipped = flip_labels(labels, 1.0, 4, torch.Generator().manual_seed(0))
    counts = torch.bincount(flipped, minlength=4)
    assert counts[0] == 0 and counts[1:].min() > 900
    with pytest.raises(ValueError, match="label_noise must be a fraction"):
        MNIST(label_noise=-0.1)


def test_pool_restricts_shuffled_epochs_and_keeps_their_length():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    labels = torch.arange(40)
    batches = TensorBatches(images, labels, torch.arange(40), 8, torch.zeros(1), torch.ones(1) / 255, shuffle=True)
    full_len = len(batches)
    batches.set_pool(torch.tensor([3, 5, 7]))
    seen = torch.cat([y for _, y in batches])
    assert set(seen.tolist()) == {3, 5, 7} and len(seen) == 40 and len(batches) == full_len
    # Ranks split the same pooled epoch into equal, disjoint-by-position shares.
    shards = []
    for rank in range(2):
        b = TensorBatches(images, labels, torch.arange(40), 8, torch.zeros(1), torch.ones(1) / 255, shuffle=True,
                          rank=rank, world_size=2)
        b.set_pool(torch.arange(10))
        shards.append(torch.cat([y for _, y in b]))
    assert len(shards[0]) == len(shards[1]) == 20
    assert sorted(torch.cat(shards).tolist()) == sorted(list(range(10)) * 4)
    batches.set_pool(None)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(40))
    evaluation = TensorBatches(images, labels, torch.arange(40), 8, torch.zeros(1), torch.ones(1), shuffle=False)
    with pytest.raises(ValueError, match="training"):
        evaluation.set_pool(torch.arange(3))


@pytest.mark.parametrize("per_class", [False, True])
def test_curriculum_pool_is_easy_to_hard_and_covers_everything_by_the_end(per_class):
    scores = torch.rand(50, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(50) % 5
    cur = Curriculum(warmup_epochs=1, start_fraction=0.2, pace_epochs=4)
    assert [cur.pacing_epoch(e) for e in range(3)] == [None, 0, 1]
    assert [cur.fraction(t) for t in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    previous: set[int] = set()
    for t in range(4):
        pool = cur.pool(scores, t, labels if per_class else None)
        assert len(pool) == (math.ceil(cur.fraction(t) * 50) if not per_class else 5 * math.ceil(cur.fraction(t) * 10))
        assert torch.all(scores[pool][1:] >= scores[pool][:-1])  # easiest first
        rest = torch.ones(50, dtype=torch.bool)
        rest[pool] = False
        if per_class:  # within each class, every pooled example is easier than every left-out one
            for c in range(5):
                inside, outside = scores[pool][labels[pool] == c], scores[rest & (labels == c)]
                assert len(outside) == 0 or inside.max() <= outside.min()
                assert len(inside) == math.ceil(cur.fraction(t) * 10)
        else:
            assert scores[pool].max() <= scores[rest].min()
        assert previous <= set(pool.tolist())  # the pool only grows
        previous = set(pool.tolist())
    assert cur.pool(scores, 4) is None  # pacing over: the whole split
    root = Curriculum(start_fraction=0.2, pace_epochs=4, pacing="root")
    assert root.fraction(1) == pytest.approx(math.sqrt(0.04 + 0.96 / 4)) and root.fraction(4) == 1.0


def test_curriculum_arguments_are_checked():
    with pytest.raises(ValueError, match="warmup_epochs >= 1"):
        Curriculum(warmup_epochs=0)
    with pytest.raises(ValueError, match="start_fraction"):
        Curriculum(start_fraction=0.0)


def test_per_class_metrics_match_hand_counts():
    metrics = PerClassMetrics(3)
    preds, targets = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0])
    metrics.update(preds, targets)
    values = metrics.compute("val", ["a", "b/c", "d"])
    assert values["val/recall/a"] == pytest.approx(0.5) and values["val/recall/b-c"] == pytest.approx(0.5)
    assert values["val/recall/d"] == pytest.approx(1.0)
    f1 = [2 * 1 / (2 * 1 + 1 + 1), 2 * 1 / (2 + 0 + 1), 2 * 2 / (4 + 1 + 0)]  # 2tp / (2tp + fp + fn)
    assert values["val/f1_macro"] == pytest.approx(sum(f1) / 3)
