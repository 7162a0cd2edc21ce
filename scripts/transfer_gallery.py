"""Best-vs-worst gallery: test images the best run classifies correctly and the worst run gets wrong.

    python scripts/transfer_gallery.py runs/transfer_*/version_*        # picks best and worst by test/acc
    python scripts/transfer_gallery.py --best runs/a/version_0 --worst runs/b/version_0 --k 5

Each argument is a litlab run directory (it holds `config.yaml`, `results.json` and `checkpoints/best.ckpt`).
Both models are rebuilt from their configs, loaded from their best checkpoints and run on the best run's test
split. Writes `transfer_gallery.png` (each image with the true class and both predictions) and
`transfer_gallery.csv` into `--out` (default: the best run's `figures/`) and prints the runs ranked by test/acc.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbacks.analysis.figures import plt  # noqa: E402  (Agg backend set there)
from runtime import run_record  # noqa: E402
from runtime.files import write_atomic  # noqa: E402
from callbacks.analysis.testset import grid_shape, predict_probs  # noqa: E402


def run_label(run: Path) -> str:
    """`<mode> lr=<lr>` from the run's config (EncoderFinetuning's mode), else the run directory's name."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    model = cfg.get("model", {}).get("init_args", {})
    modes = [c.get("init_args", {}).get("mode") for c in (cfg.get("trainer", {}).get("callbacks") or [])
             if isinstance(c, dict) and str(c.get("class_path", "")).endswith("EncoderFinetuning")]
    name = modes[0] if modes else f"{run.parent.name}/{run.name}"
    return f"{name} lr={model['lr']:g}" if "lr" in model else name


def test_acc(run: Path) -> float:
    results = run_record.path(run)
    if not results.is_file():
        raise FileNotFoundError(f"{results} not found: is {run} a finished litlab run directory?")
    acc = run_record.read(run).get("test/acc")
    if acc is None:
        raise ValueError(f"{results} has no test/acc: run `litlab test` on {run} first (or fit with test_after_fit).")
    return float(acc)


def load_run(run: Path):
    """(model in eval mode with the best checkpoint's weights, its data module) rebuilt from `config.yaml`."""
    from cli import cli_main

    ckpt = run / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: the gallery needs each run's best checkpoint.")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    # Only what builds the model and data (fit-only keys such as ckpt_path are not options without a subcommand).
    cfg = {key: cfg[key] for key in ("seed_everything", "trainer", "model", "data") if key in cfg}
    cfg["trainer"]["logger"] = False
    cfg["trainer"]["callbacks"] = []  # no analysis or finetuning callback: only the model's forward is used
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(cfg, f)
    argv, sys.argv = sys.argv, sys.argv[:1]  # this script's own arguments are not the CLI's
    try:
        cli = cli_main(["--config", f.name], run=False)
    finally:
        sys.argv = argv
    Path(f.name).unlink()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    cli.model.load_state_dict(state)
    return cli.model.eval(), cli.datamodule


def gallery(best: Path, worst: Path, k: int, out: Path) -> list[list]:
    best_model, dm = load_run(best)
    worst_model, _ = load_run(worst)
    dm.setup("test")
    x, y = dm.split_tensors("test")
    p_best, p_worst = predict_probs(best_model, x), predict_probs(worst_model, x)  # [N, classes] each
    right_wrong = (p_best.argmax(1) == y) & (p_worst.argmax(1) != y)
    # The worst run's most confident mistakes among them: the clearest cases of what transfer bought.
    conf_worst = p_worst.max(1).values
    order = torch.nonzero(right_wrong).squeeze(1)
    order = order[conf_worst[order].argsort(descending=True)][:k]
    names = list(dm.class_names)
    lb, lw = run_label(best), run_label(worst)
    rows = [[int(i), names[y[i]], names[p_best[i].argmax()], round(float(p_best[i].max()), 4),
             names[p_worst[i].argmax()], round(float(p_worst[i].max()), 4)] for i in order.tolist()]
    header = ["index", "true", "best_predicted", "best_confidence", "worst_predicted", "worst_confidence"]
    csv = "\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n"
    write_atomic(out / "transfer_gallery.csv", csv)
    pixels = dm.denormalize(x[order]).clamp(0, 1).cpu()  # [k, C, H, W] in [0, 1]
    r, c = grid_shape(max(len(rows), 1), 5)
    fig, axes = plt.subplots(r, c, figsize=(2.6 * c, 3.0 * r + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, row in zip(axes.flat, pixels, rows):
        ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap="gray" if img.shape[0] == 1 else None)
        ax.set_title(f"true: {row[1]}\nbest: {row[2]} ({row[3]:.2f})\nworst: {row[4]} ({row[5]:.2f})", fontsize=8)
    fig.suptitle(f"{int(right_wrong.sum())} test images right by best ({lb}) and wrong by worst ({lw}); "
                 f"{len(rows)} shown", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic(out / "transfer_gallery.png", buf.getvalue())
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories; best and worst chosen by test/acc")
    parser.add_argument("--best", type=Path, help="the best run's directory (instead of choosing)")
    parser.add_argument("--worst", type=Path, help="the worst run's directory (instead of choosing)")
    parser.add_argument("--k", type=int, default=5, help="images to show (default 5)")
    parser.add_argument("--out", type=Path, help="output folder (default: <best run>/figures)")
    args = parser.parse_args(argv)
    ranked = sorted(((test_acc(r), r) for r in {*args.runs, *filter(None, (args.best, args.worst))}), reverse=True)
    for acc, run in ranked:
        print(f"{acc:.4f}  {run_label(run):<28} {run}")
    best = args.best or (ranked[0][1] if ranked else None)
    worst = args.worst or (ranked[-1][1] if ranked else None)
    if best is None or worst is None or best == worst:
        parser.error("need two different runs: give at least two run directories, or --best and --worst")
    out = args.out or best / "figures"
    rows = gallery(best, worst, args.k, out)
    print(f"{len(rows)} images → {out / 'transfer_gallery.png'} (+ .csv); best {best}, worst {worst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
