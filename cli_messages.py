"""What `litlab` says when the command line is wrong: one `litlab:` paragraph that names what was given, what is
accepted and the nearest valid name, instead of jsonargparse's usage plus nested validation report (~80 lines,
the line that matters last). The full usage stays on `--help`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

# What LightningCLI itself runs, and what litlab adds (experiments/__init__.py's COMMANDS).
SUBCOMMANDS = ("fit", "validate", "test", "predict", "sweep", "report", "reproduce")
# `--<flag>.help` with no class: the module whose shipped classes to list, and the base class they derive from.
HELP_FLAGS = {"--model.help": ("lit_models", "lightning.LightningModule"),
              "--model.net.help": ("lit_models", "torch.nn.Module"),
              "--model.init_args.net.help": ("lit_models", "torch.nn.Module"),
              "--data.help": ("datamodules", "lightning.LightningDataModule")}
NO_CLASS = ("lightning.LightningModule", "lightning.pytorch.core.module.LightningModule",
            "lightning.LightningDataModule", "lightning.pytorch.core.datamodule.LightningDataModule")


def _resolve(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def shipped(module: str, base: str) -> list[tuple[str, str]]:
    """(`module.Name`, first docstring line) for each class `module` exports that derives from `base`."""
    mod, base_cls = importlib.import_module(module), _resolve(base)
    lightning = tuple(_resolve(b) for b in ("lightning.LightningModule", "lightning.LightningDataModule"))
    out = []
    for name in mod.__all__:
        cls = getattr(mod, name)
        # nn.Module nets only: a LightningModule is an nn.Module too, and base classes are not runnable choices.
        if not inspect.isclass(cls) or not issubclass(cls, base_cls) or inspect.isabstract(cls) or (
                base == "torch.nn.Module" and issubclass(cls, lightning)) or name.startswith(("InMemory", "Tensor")):
            continue
        out.append((f"{module}.{name}", (inspect.getdoc(cls) or "").split("\n")[0]))
    return out


def help_without_class(args: list[str]) -> str | None:
    """The list of shipped classes when `args` asks `--model.help` / `--data.help` without naming one."""
    for i, arg in enumerate(args):
        if arg in HELP_FLAGS and (i + 1 == len(args) or args[i + 1].startswith("-")):
            module, base = HELP_FLAGS[arg]
            rows = "\n".join(f"  {name:32} {doc}" for name, doc in shipped(module, base))
            return f"{arg} takes a class; the ones litlab ships:\n{rows}\nTheir arguments: litlab fit {arg} <class>"
    return None


def _params(dotted: str) -> list[str]:
    """A class's arguments, following `**kwargs` to the parent's __init__ (as jsonargparse does: litlab modules
    take the shared optimiser/data arguments that way)."""
    try:
        mro = _resolve(dotted).__mro__
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    names: list[str] = []
    for klass in mro:
        if "__init__" not in vars(klass):
            continue
        try:
            parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        except (ValueError, TypeError):
            break
        names += [p.name for p in parameters if p.name != "self" and p.name not in names
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def _nearest(name: str, choices: list[str]) -> str | None:
    lower = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.5)
    return lower[match[0]] if match else None


def _flag_given(args: list[str], key: str) -> str:
    """The flag as the user typed it (`--model.net.hiden`) for a key jsonargparse names alone (`hiden`)."""
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and (flag[2:] == key or flag.endswith("." + key)):
            return flag
    return f"--{key}"


def _configs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")] + [
        a.split("=", 1)[1] for a in args if a.startswith("--config=")]


def diagnose(message: str, args: list[str], valid_flags: list[str], sub: str | None) -> list[str]:
    """The paragraph's sentences for jsonargparse's `message` about `args`."""
    if m := re.search(r"Option '([\w.]+)' is not accepted", message):
        key = m.group(1)
        end = message.find("\n", m.end())
        line = message[message.rfind("\n", 0, m.start()) + 1: end if end >= 0 else None]
        classes = re.findall(r"class_path[ =]'([\w.]+)'", line) or re.findall(r"class_path[ =]'([\w.]+)'",
                                                                               message[: m.start()])
        owner = classes[-1] if classes else ""
        if owner in NO_CLASS:
            configs = [c for c in _configs(args) if Path(c).name != "base.yaml"]
            given = configs[-1] if configs else "the config"
            return [f"no {'model' if 'Module' in owner and 'Data' not in owner else 'data'} class is set, so "
                    f"`{key}` from {given} has nothing to apply to: {given} is an experiment config, which holds only "
                    "its differences from configs/base.yaml.",
                    f"Put the base config first: litlab {sub or 'fit'} --config configs/base.yaml --config {given} ..."]
        flag, params = _flag_given(args, key.split(".")[-1]), _params(owner)
        near = _nearest(key.split(".")[-1], params)
        out = [f"{flag}: {owner.rsplit('.', 1)[-1] or 'this class'} has no argument `{key}`."]
        if near:
            out.append(f"Did you mean `{flag.rsplit('.', 1)[0]}.{near}`?")
        if params:
            out.append(f"It accepts: {', '.join(params)}.")
        return out
    if m := re.search(r"module '([\w.]+)' has no attribute '(\w+)'", message):
        module, name = m.groups()
        names = getattr(importlib.import_module(module), "__all__", [])
        near = _nearest(name, list(names))
        return [f"there is no class `{module}.{name}`." + (f" Did you mean `{module}.{near}`?" if near else ""),
                f"The classes litlab ships: litlab fit --model.help, litlab fit --data.help."]
    if m := re.search(r'Parser key "([\w.]+)":\s*\n?\s*(?:Type .*?: )?Expected a (.+?)\. Got value: (.*)', message):
        key, expected, value = m.groups()
        flag = _flag_given(args, key)
        if choices := re.findall(r"'([^']*)'", expected) if "Literal" in expected else []:
            near = _nearest(value, choices)
            return [f"{flag} {value}: not one of {', '.join(choices)}." + (f" Did you mean `{flag} {near}`?"
                                                                          if near else "")]
        return [f"{flag} {value}: expected {expected.replace('<class ', '').replace('>', '')}."]
    command = re.search(r"invalid choice: '([^']*)'", message)
    if m := command or re.search(r"unrecognized arguments: (.*)", message, re.IGNORECASE):
        words = m.group(1).split()
        if (command or sub is None) and words:
            near = _nearest(words[0], list(SUBCOMMANDS))
            return [f"unknown command `{words[0]}`; litlab's commands: {', '.join(SUBCOMMANDS)}."
                    + (f" Did you mean `litlab {near}`?" if near else "")]
        # The flags jsonargparse names; when it names only the subcommand, the ones the parser lacks.
        unknown = [w.split("=", 1)[0] for w in words if w.startswith("--")] or [
            a.split("=", 1)[0] for a in args if a.startswith("--") and not _known(a.split("=", 1)[0], valid_flags)]
        if unknown:
            near = difflib.get_close_matches(unknown[0], valid_flags, n=1, cutoff=0.6)
            return [f"unknown option {unknown[0]}." + (f" Did you mean `{near[0]}`?" if near else "")]
    # Anything else: the innermost lines of jsonargparse's report, which hold the reason.
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.strip().startswith(
        ("Subtypes:", "Given value", "- Expected a <class 'NoneType'>", "Errors:", "Does not validate"))]
    return lines[-4:]


def _known(flag: str, valid_flags: list[str]) -> bool:
    """A flag the parser has, or one below a class-typed flag (`--model.lr`, `--trainer.callbacks.k`)."""
    return any(flag == v or flag.startswith(v + ".") for v in valid_flags)


class LitlabParser(LightningArgumentParser):
    """LightningArgumentParser whose errors are one `litlab:` paragraph (at most 10 lines) on stderr, exit code 2."""

    litlab_args: list[str] = []

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a nested parse that its caller handles
            super().error(message, ex)
        args = self.litlab_args
        sub = next((a for a in args if not a.startswith("-") and a in SUBCOMMANDS), None)
        subparser = getattr(ex, "subcommand_parser", None) or _subparser(self, sub) or self
        valid = sorted({o for a in subparser._actions for o in a.option_strings if o.startswith("--")})
        try:
            sentences = diagnose(message, args, valid, sub)
        except Exception:  # a message shape not foreseen here must still end in a message, not a traceback
            sentences = [" ".join(message.split())[:600]]
        text = "litlab: " + " ".join(sentences)
        lines = textwrap.wrap(text, 118, break_on_hyphens=False)[:8]
        lines.append(f"(litlab {sub + ' ' if sub else ''}--help lists every option.)")
        sys.stderr.write("\n".join(lines) + "\n")
        raise SystemExit(2)


def _subparser(parser: LightningArgumentParser, sub: str | None) -> LightningArgumentParser | None:
    action = getattr(parser, "_subcommands_action", None)
    return action._name_parser_map.get(sub) if action is not None and sub else None
