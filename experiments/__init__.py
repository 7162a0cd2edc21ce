"""Experiments: W&B sweep files run offline (`litlab sweep`), their tables, and HTML/Markdown reports
(`litlab report`), report reproductions (`litlab reproduce`), and model export (`litlab export`). `cli.main` hands these commands to `dispatch`."""

from __future__ import annotations

COMMANDS = ("sweep", "report", "reproduce", "export")


def dispatch(command: str, argv: list[str]) -> None:
    if command == "sweep":
        from experiments.sweep import main
    elif command == "reproduce":
        from experiments.reproduce import main
    elif command == "export":
        from experiments.export import main
    else:
        from experiments.report import main
    main(argv)
