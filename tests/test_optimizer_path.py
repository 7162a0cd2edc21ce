"""One optimizer path: Classifier and TripletEncoder take the same optimiser/schedule arguments (declared once in
OptimizedModule) and build their optimisers the same way; `--model.help` lists them alike."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

from cli import cli_main
from lit_models import Classifier, TripletEncoder

OPTIONS = ("optimizer", "lr", "momentum", "weight_decay", "lr_decay", "schedule", "warmup", "nesterov")


def help_options(model: str) -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli_main(["fit", "--model.help", model])
    return set(re.findall(r"^  --model\.(\w+) ", out.getvalue(), flags=re.M))


def test_help_shows_the_same_optimizer_options():
    classifier, triplet = help_options("lit_models.Classifier"), help_options("lit_models.TripletEncoder")
    assert set(OPTIONS) <= classifier and set(OPTIONS) <= triplet
    assert classifier & triplet == set(OPTIONS) | {"num_classes", "input_shape"}


def test_triplet_encoder_uses_the_shared_momentum_and_schedule():
    # Before: SGD momentum was hard-coded to 0.9 and the triplet encoder had no schedule.
    model = TripletEncoder(optimizer="sgd", lr=0.05, momentum=0.5, lr_decay=0.9)
    made = model.configure_optimizers()
    opt, sched = made["optimizer"], made["lr_scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
    assert isinstance(sched, torch.optim.lr_scheduler.ExponentialLR) and sched.gamma == 0.9
    assert (model.hparams.optimizer, model.hparams.lr, model.hparams.warmup) == ("sgd", 0.05, 0.25)


def test_defaults_are_saved_as_hparams_and_validated_once():
    assert Classifier().hparams.momentum == 0.9 and TripletEncoder().hparams.optimizer == "adam"
    for module in (Classifier, TripletEncoder):
        with pytest.raises(ValueError, match="Need lr > 0"):
            module(lr=-1.0)
        with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'"):
            module(optimizer="rmsprop")
