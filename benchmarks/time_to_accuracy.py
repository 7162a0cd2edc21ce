"""Training time until the test accuracy first reaches a target: litlab's Trainer vs a plain PyTorch loop.

    python benchmarks/time_to_accuracy.py --data-dir ../shared/data            # the two MNIST recipes
    python benchmarks/time_to_accuracy.py --data-dir ../shared/data --recipes cifar10
    python benchmarks/time_to_accuracy.py --data-dir ../shared/data --recipes mlp --repeats 3

Recipes are litlab configs: `configs/fast_mlp_mnist.yaml` (MLP to 98 %), `configs/fast_cnn_mnist.yaml` (CNN to
99 %), `configs/fast_cnn_cifar10.yaml` (FastCNN to 80 % and 85 % on CIFAR-10's test images; on a GPU use
`--config configs/fast_cnn_cifar10_gpu.yaml --targets 0.94`). For each, in this one process and alternating
(litlab, plain, litlab, ...):

* litlab: `litlab fit --config configs/base.yaml --config <recipe>` through the Trainer (progress bar, CSV logger,
  checkpointing; validation off since the test set is evaluated here), plus a callback that evaluates the test
  set at every epoch end (or every `--eval-every` steps) and stops training once the target is reached.
* plain: the same net from the same initial weights, the same optimiser and schedule (`make_optimizer`), the same
  batches in the same order with the same augmentation (`TensorBatches`, same seed), the same label smoothing,
  memory layout (channels_last) and autocast (bf16) as the litlab run, evaluated at the same points.

Reported "train s" is wall time from the first step to the evaluation that reached the target, MINUS the time
spent evaluating (reported separately as "eval s"), so both sides are charged only for training. Data loading
and set-up before the first step are excluded on both sides. "cpu s" is the same span in this process's CPU
time: on a machine shared with other jobs it estimates what the wall time would be on a quiet one (with one
torch thread, OMP_NUM_THREADS=1; with T threads it is up to T times the wall time). On a GPU every clock read
waits for the device first (`benchmarks._clock.now`). "img/s" is training images per training second.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: import the repo's packages
from benchmarks._clock import now  # noqa: E402
from callbacks.training.accelerate import Accelerate  # noqa: E402
from cli import cli_main  # noqa: E402
from datamodules.location import default_data_dir  # noqa: E402
from lit_models import make_optimizer  # noqa: E402
from lit_models.nets import DataInitializedNet  # noqa: E402

# name: (config, targets: the run stops at the last, the others are milestones on the way, data folder it needs)
RECIPES = {"mlp": ("configs/fast_mlp_mnist.yaml", (0.98,), "MNIST/raw"),
           "cnn": ("configs/fast_cnn_mnist.yaml", (0.99,), "MNIST/raw"),
           "cifar10": ("configs/fast_cnn_cifar10.yaml", (0.80, 0.85), "cifar-10-batches-bin")}


@torch.inference_mode()
def test_accuracy(net: nn.Module, x: Tensor, y: Tensor, batch: int = 5000) -> float:
    was_training = net.training
    net.eval()
    correct = sum(int((net(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum()) for i in range(0, len(y), batch))
    net.train(was_training)
    return correct / len(y)


class Clock:
    """Training time so far (wall and this process's CPU time, both minus evaluation) and the accuracy curve.

    `reached[t]` is (train seconds, CPU seconds, images) when the accuracy first reached t, for every t in
    `milestones` and `target`; training stops at `target`."""

    def __init__(self, x: Tensor, y: Tensor, target: float, milestones: tuple[float, ...] = ()) -> None:
        self.x, self.y, self.target = x, y, target
        self.curve: list[tuple[int, float, float]] = []  # (step, train seconds, accuracy)
        self.reached: dict[float, tuple[float, float, int]] = {}
        self.targets = sorted({*milestones, target})
        self.eval_s = self.eval_cpu = 0.0
        self.images = 0  # training images seen (the caller counts them)

    @property
    def reached_s(self) -> float | None:
        return self.reached[self.target][0] if self.target in self.reached else None

    @property
    def reached_cpu(self) -> float | None:
        return self.reached[self.target][1] if self.target in self.reached else None

    def start(self) -> None:
        self.t0, self.c0 = now()

    def check(self, net: nn.Module, step: int) -> bool:
        t, c = now()
        acc = test_accuracy(net, self.x, self.y)
        self.curve.append((step, t - self.t0 - self.eval_s, acc))
        for target in self.targets:
            if acc >= target and target not in self.reached:
                self.reached[target] = (self.curve[-1][1], c - self.c0 - self.eval_cpu, self.images)
        t2, c2 = now()
        self.eval_s += t2 - t
        self.eval_cpu += c2 - c
        return self.target in self.reached


class StopAtAccuracy(L.Callback):
    def __init__(self, clock: Clock, every: int) -> None:
        self.clock, self.every = clock, every

    def on_train_start(self, trainer, pl_module) -> None:
        self.clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.images += len(batch[1])
        if self.every and trainer.global_step % self.every == 0 and self.clock.check(pl_module.net, trainer.global_step):
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.every and self.clock.check(pl_module.net, trainer.global_step):
            trainer.should_stop = True


def run_litlab(cli, clock: Clock, every: int) -> None:
    cli.trainer.callbacks.append(StopAtAccuracy(clock, every))
    cli.trainer.fit(cli.model, cli.datamodule)


def run_plain(net: nn.Module, hp, batches, max_epochs: int, clock: Clock, every: int, bf16: bool = False) -> None:
    made = make_optimizer([p for p in net.parameters() if p.requires_grad], hp, max_epochs * len(batches))
    opt = made["optimizer"] if isinstance(made, dict) else made
    sched = made["lr_scheduler"] if isinstance(made, dict) else None
    per_step = isinstance(sched, dict)  # onecycle: {"scheduler", "interval": "step"}; exponential: per epoch
    sched = sched["scheduler"] if per_step else sched
    smoothing = hp.get("label_smoothing", 0.0)
    device = next(net.parameters()).device.type
    net.train()
    step = 0
    clock.start()
    for epoch in range(max_epochs):
        batches.sampler.set_epoch(epoch)
        for x, y in batches:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):  # as Lightning's bf16-mixed does
                loss = F.cross_entropy(net(x), y, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            clock.images += len(y)
            if per_step:
                sched.step()
            if every and step % every == 0 and clock.check(net, step):
                return
        if sched is not None and not per_step:
            sched.step()
        if not every and clock.check(net, step):
            return


def plain_twin(cli, dm) -> nn.Module:
    """A copy of the litlab run's net, before training, prepared as the Trainer prepares it (whitening set from
    the same training images; the layout and compilation the run's `Accelerate` callbacks apply on its device)."""
    net, device = copy.deepcopy(cli.model.net), cli.trainer.strategy.root_device
    if isinstance(net, DataInitializedNet):
        net.init_from_data(dm.split_tensors("train", limit=net.data_examples)[0])
    for accelerate in (c for c in cli.trainer.callbacks if isinstance(c, Accelerate) and c.active_on(device)):
        accelerate.apply(net)
    return net.to(device)


def row(name: str, target: float, lit: Clock, plain: Clock, steps_per_epoch: int) -> str:
    a, b = lit.reached.get(target), plain.reached.get(target)
    nan = (float("nan"), float("nan"), 0)
    (ls, lc, li), (ps, pc, pi) = a or nan, b or nan
    ratio = f"{ls / ps:6.3f}" if a and b else "   n/a"
    fmt = lambda c: f"{c.curve[-1][2]:.4f}/{c.curve[-1][0] / steps_per_epoch:.1f}" if c.curve else "-"  # noqa: E731
    return (f"{name:<8} {target:>6.2f} {ls:>14.2f} {ps:>13.2f} {ratio} {f'{lc:.1f}/{pc:.1f}':>17} "
            f"{f'{li / ls if a else 0:.0f}/{pi / ps if b else 0:.0f}':>13} {fmt(lit):>17} {fmt(plain):>16} "
            f"{f'{lit.eval_s:.1f}/{plain.eval_s:.1f}':>18}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="folder holding MNIST/raw/ and/or cifar-10-batches-bin/ (default: $LITLAB_DATA)")
    parser.add_argument("--recipes", nargs="*", default=["mlp", "cnn"], choices=list(RECIPES))
    parser.add_argument("--config", help="use this recipe config instead of the shipped one (one recipe only)")
    parser.add_argument("--targets", nargs="*", type=float, help="accuracies to time (the last stops the run)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating (litlab, plain) pairs per recipe")
    parser.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: at epoch ends)")
    parser.add_argument("--out", default="runs/benchmarks", help="where the litlab runs write their files")
    parser.add_argument("--litlab-only", action="store_true", help="skip the plain loop (for tuning recipes)")
    parser.add_argument("--verbose", action="store_true", help="print every evaluation (step, seconds, accuracy)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more litlab CLI arguments (last)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the Lightning CLI gets its arguments from cli_main only
    if args.config and len(args.recipes) != 1:
        sys.exit("--config replaces one recipe's config: choose that recipe with --recipes.")
    args.config = args.config and str(Path(args.config).resolve())
    os.chdir(Path(__file__).resolve().parents[1])
    for name in args.recipes:
        if not (Path(args.data_dir) / RECIPES[name][2]).is_dir():
            sys.exit(f"{RECIPES[name][2]} not found under {args.data_dir}: pass --data-dir (the folder holding it).")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}  {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), lightning {L.__version__}, load {load}; "
          f"evaluating {'every %d steps' % args.eval_every if args.eval_every else 'at epoch ends'}")
    print(f"# {'recipe':<6} {'target':>6} {'litlab train s':>14} {'plain train s':>13} {'ratio':>6} "
          f"{'cpu s (lit/plain)':>17} {'img/s (l/p)':>13} {'litlab acc/epochs':>17} {'plain acc/epochs':>16} "
          f"{'eval s (lit/plain)':>18}")
    for name in args.recipes:
        config, targets, _ = RECIPES[name]
        config, targets = args.config or config, tuple(args.targets or targets)
        rows = []
        for rep in range(args.repeats):
            cli = cli_main(["--config", "configs/base.yaml", "--config", config, "--data.data_dir", args.data_dir,
                            "--trainer.limit_val_batches", "0", "--trainer.logger.init_args.save_dir", args.out,
                            "--trainer.logger.init_args.name", f"tta_{name}", "--test_after_fit", "false",
                            *args.extra], run=False)
            dm, hp = cli.datamodule, cli.model.hparams
            dm.setup("fit")
            x, y = dm.split_tensors("test")
            net0 = plain_twin(cli, dm)  # the plain loop starts from the same initial weights
            x, y = x.to(cli.trainer.strategy.root_device), y.to(cli.trainer.strategy.root_device)
            steps_per_epoch = len(dm.train_dataloader())
            lit, plain = Clock(x, y, targets[-1], targets[:-1]), Clock(x, y, targets[-1], targets[:-1])
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                run_litlab(cli, lit, args.eval_every)
            if not args.litlab_only:
                bf16 = str(cli.trainer.precision).startswith("bf16")
                run_plain(net0, hp, dm.train_dataloader(), cli.trainer.max_epochs, plain, args.eval_every, bf16)
            rows.append((lit, plain))
            for side, clock in (("litlab", lit), ("plain", plain)):
                if args.verbose:
                    print(f"  {name} {rep} {side}: " + ", ".join(f"{s / steps_per_epoch:.2f}ep {t:.1f}s {a:.4f}"
                                                            for s, t, a in clock.curve), flush=True)
            for target in targets:
                print(row(name, target, lit, plain, steps_per_epoch), flush=True)
        done = [(a.reached_s, b.reached_s) for a, b in rows if a.reached_s and b.reached_s]
        if len(done) > 1:
            print(f"{name:<8} median of {len(done)}: litlab {statistics.median(a for a, _ in done):.2f} s, plain "
                  f"{statistics.median(b for _, b in done):.2f} s, ratio {statistics.median(a / b for a, b in done):.3f}")
        if len(done) < len(rows) and not args.litlab_only:
            print(f"{name:<8} {len(rows) - len(done)} run(s) missed the {targets[-1]:.0%} target within max_epochs "
                  "(nan above); see --verbose for the accuracy curve.")


if __name__ == "__main__":
    main()
