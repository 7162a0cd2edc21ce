"""Per-step framework overhead: one training epoch through litlab's Trainer vs a plain PyTorch loop.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/epoch_overhead.py --data-dir ../shared/data

For each net (MLP [128, 64], MLP [1024, 512, 256], LeNet-5) two runs, each alternating epoch by epoch with a
plain loop in this one process, so background load hits both sides alike and the RATIO is what to read:

* litlab: `litlab fit --config configs/base.yaml` (progress bar, CSV logger, checkpointing, epoch-level
  metrics; validation off) — a callback times each training epoch (`on_train_epoch_start` → `on_train_epoch_end`,
  so validation and checkpoint writes are not counted) and then runs one plain epoch on its own copy of the net.
* stock: what the Lightning docs show — a LightningModule with per-step `self.log` of loss and a torchmetrics
  accuracy, a default `Trainer` (model summary, progress bar redrawn every step, checkpointing, CSV logger) and a
  shuffled `DataLoader` over a `TensorDataset` of the same normalised images — alternated with the same plain loop.

The plain loop: `for x, y in batches: loss = cross_entropy(net(x), y); zero_grad; backward; step` over the same
in-memory batches litlab trains on (`TensorBatches`), with the same SGD settings. Each ratio is the median of
per-alternation ratios after a warm-up epoch; the spread (25th-75th percentile) says how noisy the machine was.
Each is given twice: by wall time and by this process's CPU time. On a machine shared with other jobs the CPU-time
ratio is the steadier estimate of the ratio on a quiet machine (run with OMP_NUM_THREADS=1 so CPU time is the
time of the one thread doing the work); on a quiet machine the two agree.

Python calls per training step, the figure load cannot blur: after the timed epochs, one more litlab epoch and
one more plain epoch run under cProfile (benchmarks/_calls.py), so profiling distorts no timing. Printed for
litlab, the plain loop and stock Lightning, with litlab's calls by origin (lightning / litlab / torch / other /
stdlib / builtins) and its most-called functions; `--bare` adds the same for Lightning's loop alone (litlab's
module on a Trainer without callbacks, logger, checkpointing or bar). `--calls-only` skips the timing (two epochs: a warm-up and the
counted one); `--pstats PREFIX` writes litlab's profile for `python -m pstats`. Every clock read waits for the GPU
first (benchmarks/_clock.py).

    python benchmarks/epoch_overhead.py --data-dir ../shared/data --nets mlp_128_64 --calls-only --no-stock
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: import the repo's packages
from benchmarks._calls import Calls, calls_report, start_counting  # noqa: E402
from benchmarks._clock import now  # noqa: E402
from cli import cli_main  # noqa: E402
from runtime.lightning_private import skip_no_op_batch_hooks  # noqa: E402
from runtime.profiler import NullProfiler  # noqa: E402
from datamodules.location import default_data_dir  # noqa: E402


NETS = {
    "mlp_128_64": ["--model.net", "lit_models.MLP", "--model.net.hidden", "[128, 64]"],
    "mlp_1024_512_256": ["--model.net", "lit_models.MLP", "--model.net.hidden", "[1024, 512, 256]"],
    "lenet5": ["--model.net", "lit_models.LeNet5"],
}


def plain_epoch(net: nn.Module, opt: torch.optim.Optimizer, batches) -> tuple[float, float]:
    t0, c0 = now()
    net.train()
    for x, y in batches:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    t1, c1 = now()
    return t1 - t0, c1 - c0


class Alternate(L.Callback):
    """Times the Trainer's training epochs and runs one plain epoch (on a copy of the net) after each.

    With `count=True` the last epoch is not timed: its Trainer epoch and the plain epoch after it run under
    cProfile instead (`self.calls`: litlab's and the plain loop's `Calls`), so profiling distorts no timing.
    """

    def __init__(self, batches, lr: float, momentum: float, count: bool = False) -> None:
        self.batches, self.lr, self.momentum, self.count = batches, lr, momentum, count
        self.framework: list[tuple[float, float]] = []  # (wall, CPU) seconds per epoch
        self.plain: list[tuple[float, float]] = []
        self.calls: dict[str, Calls] = {}
        self._stop: Callable[[int], Calls] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.net = copy.deepcopy(pl_module.net)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.count and trainer.current_epoch == trainer.max_epochs - 1:
            self._stop = start_counting()
        self.t0, self.c0 = now()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        t, c = now()
        self.batches.sampler.set_epoch(trainer.current_epoch)
        if self._stop is not None:
            self.calls["litlab"] = self._stop(trainer.num_training_batches)
            stop = start_counting()
            with torch.enable_grad():
                plain_epoch(self.net, self.opt, self.batches)
            self.calls["plain"] = stop(len(self.batches))
            return
        self.framework.append((t - self.t0, c - self.c0))
        with torch.enable_grad():
            self.plain.append(plain_epoch(self.net, self.opt, self.batches))

    def summary(self, clock: int = 0) -> tuple[float, float, float, float, float, int]:
        """Median seconds per epoch (framework, plain), median ratio and its quartiles, n; clock 0 = wall, 1 = CPU."""
        fw, pl = [t[clock] for t in self.framework[1:]], [t[clock] for t in self.plain[1:]]  # drop the warm-up
        ratios = sorted(a / b for a, b in zip(fw, pl))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        return statistics.median(fw), statistics.median(pl), statistics.median(ratios), q[0], q[2], len(ratios)


class StockModule(L.LightningModule):
    """The stock Lightning recipe: per-step `self.log` of the loss and of a torchmetrics accuracy."""

    def __init__(self, net: nn.Module, lr: float, momentum: float, num_classes: int = 10) -> None:
        super().__init__()
        self.net, self.lr, self.momentum = net, lr, momentum
        self.train_acc = MulticlassAccuracy(num_classes=num_classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_acc, prog_bar=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


def epochs(args) -> int:
    """Warm-up, timed alternations, then the counted epoch (the only one with --calls-only)."""
    return 1 + (0 if args.calls_only else args.repeats) + (0 if args.no_calls else 1)


def run_litlab(name: str, data: list[str], args) -> Alternate:
    cli = cli_main(["--config", "configs/base.yaml", *data, *NETS[name], "--trainer.max_epochs", str(epochs(args)),
                    "--trainer.limit_val_batches", "0", "--trainer.logger.init_args.save_dir", args.out,
                    "--trainer.logger.init_args.name", f"overhead_{name}", "--trainer.enable_model_summary", "false",
                    "--test_after_fit", "false", *args.extra], run=False)
    hp = cli.model.hparams
    # the TensorBatches litlab iterates
    timer = Alternate(cli.datamodule.train_dataloader(), hp.lr, hp.momentum, count=not args.no_calls)
    skip_no_op_batch_hooks(timer)  # as the CLI does for its own callbacks: the count is litlab's, not the timer's
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer


def run_stock(name: str, data: list[str], args) -> Alternate:
    # Build the same net and data through the CLI (no fit), then train them the stock way.
    cli = cli_main(["--config", "configs/base.yaml", *data, *NETS[name], "--trainer.logger", "false"], run=False)
    dm, hp = cli.datamodule, cli.model.hparams
    dm.setup("fit")
    x, labels = dm.split_tensors("train")
    loader = DataLoader(TensorDataset(x, labels), batch_size=dm.batch_size, shuffle=True)
    timer = Alternate(dm.train_dataloader(), hp.lr, hp.momentum, count=not args.no_calls)
    trainer = L.Trainer(max_epochs=epochs(args), accelerator="auto", devices=1, callbacks=[timer],
                        default_root_dir=str(Path(args.out) / f"stock_{name}"))
    trainer.fit(StockModule(copy.deepcopy(cli.model.net), hp.lr, hp.momentum, dm.num_classes), loader)
    return timer


def run_bare(name: str, data: list[str], args) -> Alternate:
    """Lightning's loop alone, for its calls per step: litlab's module (its no-op batch hooks skipped) and data on a
    Trainer with no callbacks, logger, checkpointing or progress bar, and litlab's NullProfiler."""
    cli = cli_main(["--config", "configs/base.yaml", *data, *NETS[name], "--trainer.logger", "false"], run=False)
    hp = cli.model.hparams
    timer = Alternate(cli.datamodule.train_dataloader(), hp.lr, hp.momentum, count=True)
    skip_no_op_batch_hooks(timer)
    trainer = L.Trainer(max_epochs=2, accelerator="auto", devices=1, callbacks=[timer], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, profiler=NullProfiler())
    trainer.fit(cli.model, cli.datamodule)
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=default_data_dir(), help="folder holding MNIST/raw/ (default: $LITLAB_DATA)")
    parser.add_argument("--repeats", type=int, default=9, help="alternations timed per run (plus one warm-up)")
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    parser.add_argument("--train-size", type=int, default=None, help="train on this many examples (default: 55k)")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock-Lightning comparison")
    parser.add_argument("--calls-only", action="store_true", help="no timing: only count Python calls per step")
    parser.add_argument("--no-calls", action="store_true", help="no counting: only time")
    parser.add_argument("--top", type=int, default=12, help="list this many of litlab's most-called functions")
    parser.add_argument("--bare", action="store_true", help="also count Lightning's bare loop (no callbacks...)")
    parser.add_argument("--pstats", default=None, help="also write litlab's profile to <this>_<net>.pstats")
    parser.add_argument("--out", default="runs/benchmarks", help="where the benchmark runs write their files")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more litlab CLI arguments (last)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the Lightning CLI gets its arguments from cli_main only
    os.chdir(Path(__file__).resolve().parents[1])  # configs/ paths are relative to the repository
    full = (Path(args.data_dir) / "MNIST" / "raw").is_dir()
    data = ["--data", "datamodules.MNIST", "--data.data_dir", args.data_dir] if full else ["--data", "datamodules.MNISTSubset"]
    if args.train_size:
        data += ["--data.train_size", str(args.train_size)]
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}  {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), lightning {L.__version__}, load {' '.join(load)}")
    print(f"# data: {'MNIST' if full else 'embedded 5k subset (MNIST not found)'}"
          f"{f', train_size {args.train_size}' if args.train_size else ''}")
    if not args.calls_only:
        print(f"# {'net':<18} {'clock':<5} {'litlab s/ep':>11} {'plain s/ep':>10} {'litlab/plain':>12} {'(IQR)':>13}  "
              f"{'stock/plain':>11} {'(IQR)':>13}")
    for name in args.nets:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):  # progress bars still draw, unseen
            lit = run_litlab(name, data, args)
            stock = None if args.no_stock else run_stock(name, data, args)
            bare = run_bare(name, data, args) if args.bare else None
        for clock, label in () if args.calls_only else ((0, "wall"), (1, "cpu")):
            a = lit.summary(clock)
            line = f"{name:<20} {label:<5} {a[0]:>11.3f} {a[1]:>10.3f} {a[2]:>12.3f} {f'({a[3]:.2f}-{a[4]:.2f})':>13}"
            if stock:
                b = stock.summary(clock)
                line += f"  {b[2]:>11.3f} {f'({b[3]:.2f}-{b[4]:.2f})':>13}"
            print(line + f"  n={a[5]}", flush=True)
        if not args.no_calls:
            print(calls_report(name, lit.calls, stock.calls if stock else None, args.top), flush=True)
            if bare:
                print(calls_report(name, bare.calls, None, args.top, who="bare Lightning"), flush=True)
            if args.pstats:
                lit.calls["litlab"].profile.dump_stats(f"{args.pstats}_{name}.pstats")

if __name__ == "__main__":
    main()
