"""One training epoch through litlab's Trainer vs a plain PyTorch loop, same net, same in-memory batches.

    python benchmarks/epoch_overhead.py --data-dir ../shared/data --repeats 7

Both run in this process and alternate epoch by epoch: a callback times each litlab training epoch
(`on_train_epoch_start` → `on_train_epoch_end`, so validation and checkpoint writes are not counted) and then
runs one plain-loop epoch on its own copy of the net. Prints the median ratio litlab / plain per net.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from cli import cli_main
from datamodules import MNIST, MNISTSubset

NETS = {"mlp_128_64": ["--model.net.hidden", "[128, 64]"]}


def plain_epoch(net: torch.nn.Module, opt: torch.optim.Optimizer, batches) -> float:
    t0 = time.perf_counter()
    net.train()
    for x, y in batches:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


class Alternate(L.Callback):
    """Times litlab's training epochs and runs one plain epoch after each of them."""

    def __init__(self, datamodule: L.LightningDataModule) -> None:
        self.litlab, self.plain = [], []
        self.datamodule = datamodule

    def on_train_start(self, trainer, pl_module) -> None:
        self.net = copy.deepcopy(pl_module.net)
        hp = pl_module.hparams
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr, momentum=hp.momentum)
        self.batches = self.datamodule.train_dataloader()  # the same TensorBatches litlab iterates

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.litlab.append(time.perf_counter() - self.t0)
        self.batches.sampler.set_epoch(trainer.current_epoch)
        with torch.enable_grad():
            self.plain.append(plain_epoch(self.net, self.opt, self.batches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding MNIST/raw/")
    parser.add_argument("--repeats", type=int, default=7, help="epochs timed per net (the first is warm-up)")
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more litlab CLI arguments")
    parser.add_argument("--out", default="runs/benchmarks", help="where the benchmark runs write their files")
    args = parser.parse_args()
    full = (Path(args.data_dir) / "MNIST" / "raw").is_dir()
    data = ["--data", "datamodules.MNIST", "--data.data_dir", args.data_dir] if full else ["--data", "datamodules.MNISTSubset"]
    print(f"data: {'MNIST 55k train' if full else 'embedded 5k subset (MNIST not found)'}, torch threads: "
          f"{torch.get_num_threads()}")
    for name in args.nets:
        cli = cli_main(["--config", "configs/base.yaml", *data, *NETS[name], "--trainer.max_epochs", str(args.repeats + 1),
                        "--trainer.limit_val_batches", "0", "--trainer.logger.init_args.save_dir", args.out,
                        "--trainer.enable_model_summary", "false", "--test_after_fit", "false", *args.extra], run=False)
        timer = Alternate(cli.datamodule)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
        lit, plain = timer.litlab[1:], timer.plain[1:]  # drop the warm-up epoch
        ratio = statistics.median(a / b for a, b in zip(lit, plain))
        print(f"{name}: litlab {statistics.median(lit):.3f} s/epoch, plain {statistics.median(plain):.3f} s/epoch, "
              f"median ratio litlab/plain = {ratio:.3f} (n={len(lit)})")


if __name__ == "__main__":
    main()
