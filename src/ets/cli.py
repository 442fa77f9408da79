"""The ``ets`` command: thin; each subcommand lives beside the code it drives.

A subcommand module exposes ``register(subparsers)``, which adds its parser
and sets ``func(args) -> int`` on it. Heavy optional dependencies (httpx, Ray,
matplotlib, the models) are imported only where used, so ``ets --help`` stays fast.

Errors: a subcommand raises :class:`CommandError` for anything the user must
act on (bad input, a server that does not answer); it is printed as one line,
``ets COMMAND: message``, with its exit status. Ctrl-C exits with 130 and
SIGTERM (``kill``) with 143, each with one line, from the first moment
:func:`main` runs (a command may handle them itself, as ``ets run`` and ``ets
serve`` do). Any other exception is a bug: one line saying so, exit 1.
``--debug`` shows the traceback in every case.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import traceback

# module path of every subcommand, in the order `ets --help` lists them
COMMAND_MODULES = (
    "ets.commands.run",
    "ets.evaluate.commands",
    "ets.serve.commands",
    "ets.view.commands",
)

EXIT_INTERRUPTED = 130  # what shells report for a process ended by Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # ... and by `kill` (128 + SIGTERM)


class CommandError(Exception):
    """What the user must act on: printed as one line (no traceback unless --debug); ``code`` is the exit status
    (2: refused before any work, 1: failed during it, 130: interrupted, 143: terminated)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Terminated(BaseException):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt (a BaseException too, so
    that no ``except Exception`` swallows it)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    from ets import __version__

    parser = argparse.ArgumentParser(
        prog="ets",
        description="Efficient Tree Search (ETS) and its baselines for math problems.",
    )
    parser.add_argument("--version", action="version", version=f"ets {__version__}")
    debug_help = "on an error, show the Python traceback too"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for sub in subparsers.choices.values():  # `ets run ... --debug` works as well as `ets --debug run ...`
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    # SIGTERM's default ends the process without a word; only the main thread may handle signals,
    # and a handler someone else installed (an embedding program's) stays theirs
    ours = threading.current_thread() is threading.main_thread() \
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _main(argv)
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _main(argv: list[str] | None) -> int:
    try:  # the subcommands' modules load here: a Ctrl-C in these first moments is one line too
        parser = build_parser()
        args = parser.parse_args(argv)
    except (KeyboardInterrupt, Terminated) as exc:
        stopped = isinstance(exc, KeyboardInterrupt)
        print(f"ets: {'interrupted' if stopped else 'terminated'}", file=sys.stderr)
        return EXIT_INTERRUPTED if stopped else EXIT_TERMINATED
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = f"ets {args.command}"
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except (KeyboardInterrupt, Terminated) as exc:
        if args.debug:
            traceback.print_exc()
        stopped = isinstance(exc, KeyboardInterrupt)
        print(f"{prog}: {'interrupted' if stopped else 'terminated'}", file=sys.stderr)
        return EXIT_INTERRUPTED if stopped else EXIT_TERMINATED
    except Exception as exc:
        if args.debug:
            raise
        print(f"{prog}: internal error, a bug in ets ({type(exc).__name__}: {' '.join(str(exc).split())}); "
              "run again with --debug for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":  # `python -m ets.cli`: run the importable module, whose CommandError the commands raise
    sys.exit(importlib.import_module("ets.cli").main())
