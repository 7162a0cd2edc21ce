"""Python calls per training step, by origin: the per-step overhead figure that machine load cannot blur.

`start_counting()` starts cProfile (which counts every Python function call and every call of a C function such
as `isinstance` or a tensor method); the function it returns stops it and gives a `Calls`: the total per step, a
breakdown by where each called function lives, and the most-called functions. Origins: `lightning` (lightning,
lightning_fabric, lightning_utilities), `litlab` (this repository's code), `torch`, `stdlib`, `builtins` (C functions
outside torch), `other` (every other installed package: tqdm, torchmetrics, ...). A builtin or stdlib call is also
*charged* to the first caller up the stack that is neither (its callers share it by call count), which answers
"whose code made these calls": an `isinstance` inside Lightning's loop is Lightning's.
"""

from __future__ import annotations

import cProfile
import pstats
import sysconfig
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
STDLIB = sysconfig.get_paths()["stdlib"]
ORIGINS = ("lightning", "litlab", "torch", "other", "stdlib", "builtins")
Key = tuple[str, int, str]  # cProfile's (file, line, function name); file "~" for C functions


def origin(key: Key) -> str:
    file, _, name = key
    if file == "~":  # a C function: "<built-in method torch.addmm>", "<method 'add_' of 'torch._C.TensorBase' ...>"
        return "torch" if "torch" in name else "builtins"
    if "site-packages/" in file:
        package = file.split("site-packages/", 1)[1].split("/", 1)[0]
        return ("lightning" if package.startswith(("lightning", "pytorch_lightning")) else
                "torch" if package == "torch" else "other")
    if file.startswith(STDLIB) or file.startswith("<frozen"):
        return "stdlib"
    return "litlab" if file.startswith(REPO) else "other"


@dataclass
class Calls:
    steps: int
    profile: pstats.Stats  # `.dump_stats(file)` for `python -m pstats file` / snakeviz

    @property
    def stats(self) -> dict:  # pstats' table: key -> (primitive calls, total calls, tottime, cumtime, {caller: ...})
        return self.profile.stats  # type: ignore[attr-defined]

    @property
    def total(self) -> int:
        return sum(row[1] for row in self.stats.values())

    @property
    def per_step(self) -> float:
        return self.total / self.steps

    def by_origin(self) -> Counter:
        """Calls per step by the origin of the called function."""
        out = Counter()
        for key, row in self.stats.items():
            out[origin(key)] += row[1] / self.steps
        return out

    def charged(self) -> Counter:
        """Calls per step by the origin of the nearest caller up the stack that is not stdlib or a builtin."""
        out = Counter()
        for key, n in self.charged_functions().items():
            out[origin(key)] += n
        return out

    def charged_functions(self) -> Counter:
        """Calls per step of each function that is not stdlib or a builtin, plus the stdlib and builtin calls made
        on its behalf (shared among callers by call count): what each Lightning or litlab function costs itself."""
        memo: dict[Key, Counter] = {}

        def share(key: Key, seen: frozenset) -> Counter:  # where one call of `key` is charged, as fractions
            if origin(key) not in ("stdlib", "builtins"):
                return Counter({key: 1.0})
            if key in memo:
                return memo[key]
            callers = {c: n[1] for c, n in self.stats[key][4].items() if c not in seen and c in self.stats}
            total = sum(callers.values())
            out = Counter()
            for caller, n in callers.items():
                for k, f in share(caller, seen | {key}).items():
                    out[k] += f * n / total
            memo[key] = out if out else Counter({key: 1.0})  # no caller seen: the profiled function itself
            return memo[key]

        out = Counter()
        for key, row in self.stats.items():
            for k, f in share(key, frozenset()).items():
                out[k] += f * row[1] / self.steps
        return out

    def top(self, n: int, charged: bool = False) -> list[tuple[float, str, str]]:
        """The `n` most-called functions, or with `charged` the `n` costliest by `charged_functions`:
        (calls per step, origin, 'file:line name')."""
        counts = self.charged_functions() if charged else {k: row[1] / self.steps for k, row in self.stats.items()}
        return sorted(((c, origin(k), label(k)) for k, c in counts.items()), reverse=True)[:n]


def label(key: Key) -> str:
    file, line, name = key
    if file == "~":
        return name
    short = file.split("site-packages/", 1)[-1] if "site-packages/" in file else file.replace(REPO + "/", "")
    return f"{short.replace(STDLIB + '/', '')}:{line} {name}"


def start_counting() -> Callable[[int], Calls]:
    """Start counting calls (cProfile); the function returned stops, and gives the `Calls` over `steps` steps."""
    profile = cProfile.Profile()
    profile.enable()

    def stop(steps: int) -> Calls:
        profile.disable()
        return Calls(steps, pstats.Stats(profile))

    return stop


def calls_report(name: str, calls: dict[str, Calls], stock: dict[str, Calls] | None, top: int,
                 who: str = "litlab") -> str:
    """The benchmark's lines for one net: calls per step of litlab (or `who` ran the Trainer), the plain loop (and
    stock Lightning), its breakdown by origin (called, and charged to the caller), and its `top` most-called and
    costliest functions."""
    lit, plain = calls["litlab"], calls["plain"]
    head = (f"{name:<20} calls/step  {who} {lit.per_step:.0f}  plain {plain.per_step:.0f}  "
            f"ratio {lit.per_step / plain.per_step:.2f}")
    if stock:
        head += f"  stock {stock['litlab'].per_step:.0f}"
    called, charged = lit.by_origin(), lit.charged()
    lines = [head + f"  ({lit.steps} steps, one epoch under cProfile, after the timed ones)",
             f"#   {who + ' calls/step by origin':<36} " + "  ".join(f"{o} {called[o]:.0f}" for o in ORIGINS),
             f"#   {'... charged to the caller':<36} " + "  ".join(f"{o} {charged[o]:.0f}" for o in ORIGINS
                                                                 if charged[o] >= 0.5)]
    for by_caller, what in ((False, "calls of the function"),
                            (True, "calls made by the function itself and its stdlib/builtin callees")):
        if top:
            lines.append(f"#   {who}: top {top} by {what}, per step:")
            lines += [f"#   {n:8.1f}  {o:<9} {where}" for n, o, where in lit.top(top, by_caller)]
    return "\n".join(lines)
