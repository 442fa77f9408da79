"""The ``ets`` console script. ets's own modules load inside :func:`main`, so a Ctrl-C in the first half
second (numpy and the config loading) is one line and exit 130, as it is everywhere else, not a traceback."""

import sys

EXIT_INTERRUPTED = 130  # as ets.cli's, which cannot be imported before the guard


def main() -> int:
    try:
        from ets.cli import main as ets_main
    except KeyboardInterrupt:
        print("ets: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return ets_main()
