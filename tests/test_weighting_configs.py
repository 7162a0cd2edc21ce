"""Every sample-weighting config runs through the CLI; curriculum and per-class metrics end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from cli import cli_main
from conftest import REPO
from helpers import BASE
from lit_models.losses.weighting import ClassWeights, Compose, class_weights

WEIGHTING = sorted((REPO / "configs" / "weighting").glob("*.yaml"))


def tiny(mnist_dir: Path, *extra: str) -> list[str]:
    return [*BASE, "--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--data.download", "false",
            "--data.batch_size", "50", "--model.net.hidden", "[32]", "--trainer.logger.init_args.save_dir", "runs",
            "--trainer.enable_progress_bar", "false", *extra]


@pytest.mark.parametrize("config", WEIGHTING, ids=[p.stem for p in WEIGHTING])
def test_each_weighting_config_runs(mnist_dir, config):
    cli = cli_main(["fit", *tiny(mnist_dir, "--config", str(config), "--trainer.fast_dev_run", "true",
                                 "--test_after_fit", "false")])
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    weighting = cli.model.weighting
    if config.stem in ("plain", "curriculum"):  # plain cross-entropy; the curriculum is a callback
        assert weighting is None
    else:
        assert weighting is not None and type(weighting).__name__ in config.read_text()
    parts = weighting.parts if isinstance(weighting, Compose) else [weighting]
    for part in parts:
        if isinstance(part, ClassWeights):  # set up from the data module's training counts at fit start
            counts = cli.datamodule.train_class_counts()
            assert torch.allclose(part.class_weights, class_weights(counts, part.mode, part.beta))


def test_experiment_configs_skew_only_the_training_split(mnist_dir):
    imb = cli_main(["fit", *tiny(mnist_dir), "--config", str(REPO / "configs" / "imbalanced_mnist.yaml"),
                    "--data.data_dir", str(mnist_dir), "--trainer.fast_dev_run", "true"])
    counts = imb.datamodule.train_class_counts()
    assert counts[3] < 0.1 * counts[2] and counts[8] < 0.1 * counts[2]
    assert imb.datamodule.num_examples("val") == 100
    noisy = cli_main(["fit", *tiny(mnist_dir), "--config", str(REPO / "configs" / "noisy_mnist.yaml"),
                      "--data.data_dir", str(mnist_dir), "--trainer.fast_dev_run", "true"])
    assert noisy.datamodule.label_noise == 0.2


def test_curriculum_paces_the_training_pool_and_logs_its_fraction(mnist_dir):
    cli = cli_main(["fit", *tiny(mnist_dir, "--config", str(REPO / "configs" / "weighting" / "curriculum.yaml"),
                                 "--trainer.max_epochs", "3", "--test_after_fit", "false")])
    (curriculum,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "Curriculum"]
    n = cli.datamodule.num_examples("train")
    assert curriculum.scores is not None and len(curriculum.scores) == n
    pool = cli.trainer.train_dataloader.pool  # epoch 2: the easiest 62.5 % of each class
    assert pool is not None and 0.6 * n < len(pool) < 0.7 * n
    rows = list(csv.DictReader((Path(cli.trainer.log_dir) / "metrics.csv").open()))
    fractions = [float(r["train/curriculum_fraction"]) for r in rows if r.get("train/curriculum_fraction")]
    assert fractions == [1.0, 0.25, 0.625]
    assert sum(1 for r in rows if r.get("val/acc")) == 3  # validation still runs every epoch
    assert cli.trainer.global_step == 3 * len(cli.datamodule.train_dataloader())  # epochs keep their length


def test_curriculum_from_a_reference_checkpoint(mnist_dir):
    ref = cli_main(["fit", *tiny(mnist_dir, "--trainer.max_epochs", "1", "--test_after_fit", "false")])
    best = ref.trainer.checkpoint_callback.best_model_path
    cur = cli_main(["fit", *tiny(mnist_dir, "--config", str(REPO / "configs" / "weighting" / "curriculum.yaml"),
                                 "--trainer.callbacks.init_args.reference_checkpoint", best,
                                 "--trainer.max_epochs", "1", "--test_after_fit", "false")])
    assert cur.trainer.train_dataloader.pool is not None  # pacing starts at epoch 0 with a reference
    with pytest.raises(SystemExit, match="litlab: reference_checkpoint .* does not hold this model's net"):
        cli_main(["fit", *tiny(mnist_dir, "--config", str(REPO / "configs" / "weighting" / "curriculum.yaml"),
                               "--trainer.callbacks.init_args.reference_checkpoint", best,
                               "--model.net.hidden", "[16]", "--trainer.max_epochs", "1")])


def test_results_hold_per_class_recall_and_macro_f1(mnist_dir):
    cli = cli_main(["fit", *tiny(mnist_dir, "--trainer.max_epochs", "1")])
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    for stage in ("val", "test"):
        assert {f"{stage}/recall/{d}" for d in range(10)} <= set(results)
    # The test figures are the tested (best) checkpoint's, now in cli.model: recompute them with scikit-learn.
    from sklearn.metrics import f1_score, recall_score

    preds, targets = [], []
    with torch.no_grad():
        for x, y in cli.datamodule.test_dataloader():
            preds.append(cli.model.eval()(x).argmax(1))
            targets.append(y)
    preds, targets = torch.cat(preds).numpy(), torch.cat(targets).numpy()
    labels = list(range(10))
    assert results["test/f1_macro"] == pytest.approx(f1_score(targets, preds, labels=labels, average="macro",
                                                              zero_division=0), abs=1e-5)
    assert results["test/recall/3"] == pytest.approx(recall_score(targets, preds, labels=[3], average="macro",
                                                                  zero_division=0), abs=1e-5)
    header = (Path(cli.trainer.log_dir) / "metrics.csv").read_text().splitlines()[0]
    assert "val/recall/3" in header and "train/recall" not in header  # eval only, never per training step
