"""The ``ets`` command: thin; each subcommand lives beside the code it drives.

A subcommand module exposes ``register(subparsers)``, which adds its parser
and sets ``func(args) -> int`` on it. Modules import their heavy dependencies
inside ``func``, so ``ets --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module path of every subcommand, in the order `ets --help` lists them
COMMAND_MODULES = (
    "ets.commands.run",
    "ets.evaluate.commands",
    "ets.serve.commands",
    "ets.view.commands",
)


def build_parser() -> argparse.ArgumentParser:
    from ets import __version__

    parser = argparse.ArgumentParser(
        prog="ets",
        description="Efficient Tree Search (ETS) and its baselines for math problems.",
    )
    parser.add_argument("--version", action="version", version=f"ets {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a subcommand not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
