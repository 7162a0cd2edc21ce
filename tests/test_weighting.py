"""Sample-weighting losses against hand computations on tiny batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_models import MLP, Classifier
from lit_models.losses.weighting import OHEM, ClassWeights, Compose, ConfidenceWeights, Focal, SelfPaced, class_weights

torch.manual_seed(0)
LOGITS = torch.randn(6, 3, requires_grad=True)
Y = torch.tensor([0, 1, 2, 2, 1, 0])


def p_true(logits=LOGITS, y=Y):
    return logits.softmax(-1)[torch.arange(len(y)), y]


def test_focal_with_gamma_zero_is_cross_entropy_and_otherwise_its_formula():
    assert torch.allclose(Focal(gamma=0.0)(LOGITS, Y, 0), F.cross_entropy(LOGITS, Y))
    p = p_true()
    hand = (-(1 - p) ** 2 * torch.log(p)).mean()
    assert torch.allclose(Focal(gamma=2.0)(LOGITS, Y, 0), hand, atol=1e-6)
    alpha = [0.2, 0.3, 0.5]
    a = torch.tensor(alpha)[Y]
    hand_alpha = (a * -(1 - p) ** 2 * torch.log(p)).mean()
    assert torch.allclose(Focal(gamma=2.0, alpha=alpha)(LOGITS, Y, 0), hand_alpha, atol=1e-6)


def test_focal_is_differentiated_through_its_factor():
    # d/dz of −(1−p)^γ log p differs from plain cross-entropy's gradient: the factor is part of the loss.
    g_focal = torch.autograd.grad(Focal(gamma=2.0)(LOGITS, Y, 0), LOGITS)[0]
    p = p_true().detach()
    g_const = torch.autograd.grad(((1 - p) ** 2 * F.cross_entropy(LOGITS, Y, reduction="none")).mean(), LOGITS)[0]
    assert not torch.allclose(g_focal, g_const, atol=1e-4)


def test_class_weights_follow_their_formulas():
    counts = torch.tensor([1000, 10, 100, 0])
    inv = class_weights(counts, "inverse")
    raw = torch.tensor([1 / 1000, 1 / 10, 1 / 100])
    assert torch.allclose(inv[:3], raw * 3 / raw.sum()) and inv[3] == 0  # mean 1 over present classes
    beta = 0.99
    eff = class_weights(counts, "effective", beta)
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in (1000, 10, 100)])
    assert torch.allclose(eff[:3], raw * 3 / raw.sum()) and eff[3] == 0
    assert torch.allclose(class_weights(counts[:3], "effective", 0.0), torch.ones(3))  # β = 0: no weighting


def test_class_weighted_loss_is_torch_weighted_cross_entropy_over_the_batch_size():
    cw = ClassWeights("inverse")
    cw.setup(torch.tensor([5, 50, 20]))
    # Divided by B (6), not by the batch's sum of weights as F.cross_entropy(weight=...)'s mean is.
    expected = F.cross_entropy(LOGITS, Y, weight=class_weights(torch.tensor([5, 50, 20])), reduction="sum") / 6
    assert torch.allclose(cw(LOGITS, Y, 0), expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs the training split's class counts"):
        ClassWeights().setup(None)


def test_ohem_backpropagates_exactly_the_top_k_with_plain_cross_entropys_gradient():
    losses = F.cross_entropy(LOGITS, Y, reduction="none")
    top2 = set(losses.topk(2).indices.tolist())
    loss = OHEM(count=2)(LOGITS, Y, 0)
    assert torch.allclose(loss, losses[sorted(top2)].sum() / 6)
    grad = torch.autograd.grad(loss, LOGITS)[0]
    assert {i for i in range(6) if grad[i].abs().sum() > 0} == top2  # only those examples get a gradient
    # ... and each exactly the one plain mean cross-entropy gives it (not 6/2 = 3x that: the step size that
    # collapsed OHEM runs at lr 0.1 when the loss was averaged over the kept examples only).
    plain = torch.autograd.grad(F.cross_entropy(LOGITS, Y), LOGITS)[0]
    assert torch.allclose(grad[sorted(top2)], plain[sorted(top2)], atol=1e-7)
    assert OHEM(fraction=0.5).k(6) == 3 and OHEM(fraction=0.01).k(6) == 1 and OHEM(count=10).k(6) == 6


def test_confidence_weights_are_constant_and_follow_the_formula():
    p = p_true().detach()
    w = (1 - p) ** 2
    ce = F.cross_entropy(LOGITS, Y, reduction="none")
    loss = ConfidenceWeights(beta=2.0)(LOGITS, Y, 0)
    assert torch.allclose(loss, (w * ce).mean(), atol=1e-6)
    grad = torch.autograd.grad(loss, LOGITS)[0]
    plain = torch.autograd.grad(ce.mean(), LOGITS)[0]
    assert torch.allclose(grad, w[:, None] * plain, atol=1e-6)  # no gradient through w: plain CE's, scaled
    assert torch.allclose(ConfidenceWeights(beta=0.0)(LOGITS, Y, 0), F.cross_entropy(LOGITS, Y))


def test_self_paced_mask_follows_its_threshold_schedule():
    # Per-example losses 0.5, 1.5, 2.5, 3.5 (logit margins chosen so CE = the value exactly).
    targets = torch.zeros(4, dtype=torch.long)
    wanted = torch.tensor([0.5, 1.5, 2.5, 3.5])
    logits = torch.stack([torch.zeros(4), torch.log(torch.exp(wanted) - 1)], dim=1)  # CE = log(1 + e^z1)
    assert torch.allclose(F.cross_entropy(logits, targets, reduction="none"), wanted, atol=1e-5)
    spl = SelfPaced(threshold=1.0, growth=2.0, warmup_epochs=0)
    assert [spl.threshold_at(t) for t in range(3)] == [1.0, 2.0, 4.0]
    for epoch, kept in ((0, [0.5]), (1, [0.5, 1.5]), (2, [0.5, 1.5, 2.5, 3.5])):
        assert torch.allclose(spl(logits, targets, epoch), torch.tensor(kept).sum() / 4, atol=1e-5)
    assert SelfPaced(threshold=0.1, warmup_epochs=0)(logits, targets, 0) == 0  # nothing kept: loss 0, not NaN
    warm = SelfPaced(threshold=1.0, growth=2.0, warmup_epochs=2)
    assert torch.allclose(warm(logits, targets, 1), wanted.mean(), atol=1e-5)  # warm-up: every example counts
    assert [warm.threshold_at(t) for t in (2, 3)] == [1.0, 2.0]


def test_compose_multiplies_class_weights_into_focal():
    counts = torch.tensor([5, 50, 20])
    both = Compose([ClassWeights("inverse"), Focal(gamma=2.0)])
    both.setup(counts)
    w = class_weights(counts)[Y]
    p = p_true()
    hand = (w * -(1 - p) ** 2 * torch.log(p)).mean()
    assert torch.allclose(both(LOGITS, Y, 0), hand, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: Focal(gamma=-1), r"gamma must be >= 0, got -1"),
    (lambda: OHEM(fraction=0), r"fraction must be in \(0, 1\], got 0"),
    (lambda: OHEM(count=0), r"count must be >= 1 .*got 0"),
    (lambda: SelfPaced(growth=0.5), r"growth >= 1 .*growth=0.5"),
    (lambda: ClassWeights("sqrt"), r"Unknown mode 'sqrt': choose 'inverse' or 'effective'"),
    (lambda: ClassWeights(beta=1.0), r"beta must be in \[0, 1\), got 1.0"),
    (lambda: Compose([]), r"Compose needs at least one strategy")])
def test_bad_strategy_arguments_are_clear_errors(make, message):
    # Each message names the argument and the value given: a check on the wrong argument fails its own case.
    with pytest.raises(ValueError, match=message):
        make()


def test_classifier_default_loss_is_plain_cross_entropy_and_weighting_only_changes_training():
    logits = LOGITS.detach()
    plain = Classifier(net=lambda s, k: MLP(s, k, hidden=[4]))
    loss, ce = plain.training_loss(logits, Y)
    assert loss is ce and torch.allclose(loss, F.cross_entropy(logits, Y))  # one fused op when unweighted
    focal = Classifier(net=lambda s, k: MLP(s, k, hidden=[4]), weighting=Focal(gamma=2.0))
    loss, ce = focal.training_loss(logits, Y)
    assert not torch.allclose(loss, F.cross_entropy(logits, Y))
    assert torch.allclose(ce, F.cross_entropy(logits, Y))  # what DivergenceGuard watches
    assert torch.allclose(focal.loss(logits, Y), F.cross_entropy(logits, Y))  # what val/test report
    assert math.isclose(float(loss), float(Focal(gamma=2.0)(logits, Y, 0)))
