"""Experiments: W&B sweep files run offline (`litlab sweep`), their tables, and HTML/Markdown reports
(`litlab report`). `cli.main` hands `litlab sweep ...` and `litlab report ...` to `dispatch`."""

from __future__ import annotations

COMMANDS = ("sweep", "report")


def dispatch(command: str, argv: list[str]) -> None:
    if command == "sweep":
        from experiments.sweep import main
    else:
        from experiments.report import main
    main(argv)
