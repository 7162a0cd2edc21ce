"""Compare sample-weighting strategies on one experiment: mean ± std over seeds of test macro-F1, rare-class
recall and accuracy, as a Markdown table (the numbers of docs/sample_weighting.md).

    python scripts/compare_weighting.py --experiment configs/imbalanced_mnist.yaml --data-dir ../shared/data \
        --seeds 0 1 2 --out imbalanced.md

Each run is `litlab fit --config configs/base.yaml --config <experiment> [--config configs/weighting/<s>.yaml]`
in-process, with `seed_everything` and `data.seed` set to the seed (so the split, the imbalance subset, the
flipped labels and the init all change with it); runs land in `<runs>/<experiment>/<strategy>/seed<k>/`.
`curriculum` scores by the model's own loss after a 1-epoch warm-up and paces over 1 epoch (3 epochs: all →
easiest 25% → all); `curriculum_ref` ranks examples by the same seed's plain cross-entropy run (its best.ckpt)
and paces from epoch 0 (25% → 62.5% → all), so it needs `plain` first in --strategies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from datamodules.location import default_data_dir  # noqa: E402
from runtime import run_record  # noqa: E402

STRATEGIES = {  # name → extra CLI arguments
    "plain": [],
    "class_weights": ["--config", "configs/weighting/class_weights.yaml"],
    "effective_number": ["--config", "configs/weighting/effective_number.yaml"],
    "focal": ["--config", "configs/weighting/focal.yaml"],
    "class_balanced_focal": ["--config", "configs/weighting/class_balanced_focal.yaml"],
    "ohem": ["--config", "configs/weighting/ohem.yaml"],
    "confidence": ["--config", "configs/weighting/confidence.yaml"],
    "self_paced": ["--config", "configs/weighting/self_paced.yaml"],
    "curriculum": ["--config", "configs/weighting/curriculum.yaml"],
    "curriculum_ref": ["--config", "configs/weighting/curriculum.yaml"],  # + the plain run's checkpoint
}


def run(experiment: Path, strategy: str, seed: int, args: argparse.Namespace) -> dict:
    from cli import cli_main

    name = f"{experiment.stem}/{strategy}/seed{seed}"
    extra = [a if not a.startswith("configs/") else str(REPO / a) for a in STRATEGIES[strategy]]
    if strategy == "curriculum_ref":
        plain = Path(args.runs) / experiment.stem / "plain" / f"seed{seed}"
        ckpts = sorted(plain.glob("version_*/checkpoints/best.ckpt"))
        if not ckpts:
            raise SystemExit(f"curriculum_ref needs the plain run of seed {seed} first (no {plain}/*/best.ckpt).")
        extra += ["--trainer.callbacks.init_args.reference_checkpoint", str(ckpts[-1])]
    elif strategy == "curriculum":
        # Scored after a 1-epoch warm-up; pace over 1 epoch so a 3-epoch run is full → easiest 25% → full.
        extra += ["--trainer.callbacks.init_args.pace_epochs", "1"]
    cli = cli_main([
        "fit", "--config", str(REPO / "configs" / "base.yaml"), "--config", str(experiment), *extra,
        "--seed_everything", str(seed), "--data.seed", str(seed), "--data.data_dir", args.data_dir,
        "--data.download", "false", "--trainer.max_epochs", str(args.epochs),
        "--trainer.logger.init_args.save_dir", args.runs, "--trainer.logger.init_args.name", name,
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *(["--data.train_size", str(args.train_size)] if args.train_size else []),
        *(["--data.val_size", str(args.val_size)] if args.val_size is not None else []),
        *args.extra,
    ])
    return run_record.read(cli.trainer.log_dir)


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", type=Path, required=True, help="experiment config, e.g. configs/noisy_mnist.yaml")
    parser.add_argument("--data-dir", default=default_data_dir(), help="folder holding MNIST/raw/ (default: $LITLAB_DATA)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=None, help="data.train_size (None: the whole split)")
    parser.add_argument("--val-size", type=int, default=None, help="data.val_size (None: the data module's default)")
    parser.add_argument("--extra", action="append", default=[],
                        help="one more litlab argument for every run, e.g. --extra=--model.lr=0.02 (repeatable)")
    parser.add_argument("--rare", nargs="+", default=["3", "8"], help="class names whose test recall to report")
    parser.add_argument("--runs", default="runs/compare_weighting", help="where the run directories go")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) and raw JSON here")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # cli_main's args are the only CLI input (LightningCLI warns about leftover argv)
    os.environ.setdefault("WANDB_MODE", "offline")

    results: dict[str, list[dict]] = {}
    for strategy in args.strategies:
        for seed in args.seeds:
            results.setdefault(strategy, []).append(run(args.experiment.resolve(), strategy, seed, args))

    columns = ["test/f1_macro", *(f"test/recall/{c}" for c in args.rare), "test/acc", "fit_seconds"]
    lines = ["| strategy | " + " | ".join(c.removeprefix("test/") for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for strategy, runs in results.items():
        lines.append(f"| {strategy} | " + " | ".join(mean_std([r[c] for r in runs]) for c in columns) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
