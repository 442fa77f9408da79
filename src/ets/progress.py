"""How a run shows its progress: one small object the run writer tells what happens.

The writer calls :meth:`Progress.start` when a run directory's work begins
(``total`` problems, ``resumed`` of them already taken from checkpoints),
:meth:`Progress.done` for each problem finished, :meth:`Progress.message` for
anything else to say (resume notes, warnings, Ray's workers) and
:meth:`Progress.close` when the run directory's work ends, finished or not.
The local and the Ray runner report through the same object.

Three forms, picked by :func:`for_stream` (``ets run`` picks for stderr):

* :class:`Progress` itself says nothing (``--quiet``);
* :class:`Bar`, for a terminal: a tqdm bar per run directory (count, rate,
  ETA), messages written above it;
* :class:`Lines`, for logs, CI and pipes: plain lines, a few per run.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
import warnings
from typing import Any, Callable, TextIO

# Lines: at most about this many count lines per run directory, however many problems it has ...
MAX_COUNT_LINES = 100
# ... but a line whenever a problem finishes this long after the last line, so a slow run shows it moves
HEARTBEAT_SECONDS = 60.0


class Progress:
    """Says nothing: the ``--quiet`` form, and the base of the forms that do."""

    def start(self, label: str, total: int, resumed: int = 0) -> None:
        """A run directory's work begins: ``total`` problems, ``resumed`` of them already done."""

    def done(self) -> None:
        """One more problem finished."""

    def message(self, text: str) -> None:
        """A line to show (it must not break a bar)."""

    def close(self) -> None:
        """The run directory's work ended (finished, failed or interrupted); safe to call twice."""


class Lines(Progress):
    """Plain lines through ``write`` (default: stderr as it is when written):
    ``LABEL: k/n problems done (12.3s)``, the time this invocation's on the run directory.

    No guess at the time left: problems differ a lot in length and, searched several
    at once, the short ones finish first, so the first finishers' pace promises too
    early an end, and a log keeps every wrong promise (the terminal's bar redraws
    tqdm's estimate as it learns). A line per problem up to ``MAX_COUNT_LINES``
    problems, beyond that per ``total / MAX_COUNT_LINES``; always the last."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.write = write or (lambda text: print(text, file=sys.stderr, flush=True))
        self.label, self.total, self.count, self.step = "", 0, 0, 1
        self.started = self.last_line = 0.0

    def start(self, label: str, total: int, resumed: int = 0) -> None:
        self.label, self.total, self.count = label, total, resumed
        self.step = max(1, math.ceil(total / MAX_COUNT_LINES))
        self.started = self.last_line = time.monotonic()

    def done(self) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count == self.total or self.count % self.step == 0 or now - self.last_line >= HEARTBEAT_SECONDS:
            self.last_line = now
            self.write(f"{self.label}: {self.count}/{self.total} problems done ({now - self.started:.1f}s)")

    def message(self, text: str) -> None:
        self.write(text)


class Bar(Progress):
    """A tqdm bar on ``stream`` (a terminal), one per run directory, starting at the problems resumed.

    Messages go through ``tqdm.write``, which clears the bar, writes the line and
    draws the bar again below it; so do Python warnings while a bar is open."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from tqdm import tqdm  # only a terminal run needs it: `ets --help` stays fast

        self.tqdm = tqdm
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.showwarning: Callable[..., None] | None = None

    def start(self, label: str, total: int, resumed: int = 0) -> None:
        self.close()
        if terminal_size(self.stream).columns:  # follow the terminal's width as it is resized
            size: dict[str, Any] = {"dynamic_ncols": True}
        else:  # a terminal that reports no size (some CI and container ones): tqdm would draw nothing
            columns, lines = shutil.get_terminal_size()
            size = {"ncols": columns, "nrows": lines}
        self.bar = self.tqdm(total=total, initial=resumed, desc=label, unit="problem", file=self.stream, leave=True,
                             **size)
        self.showwarning, warnings.showwarning = warnings.showwarning, self._warning

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def message(self, text: str) -> None:
        self.tqdm.write(text, file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # leaves the final bar on screen, ended by a newline: what follows starts below it
            self.bar = None
        if self.showwarning is not None:
            warnings.showwarning, self.showwarning = self.showwarning, None

    def _warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        if file is not None:  # a warning written somewhere else on purpose: not ours to move
            assert self.showwarning is not None
            self.showwarning(message, category, filename, lineno, file, line)
            return
        self.message(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"))


def terminal_size(stream: TextIO) -> os.terminal_size:
    """The size the terminal on ``stream`` reports; 0 x 0 when it reports none."""
    try:
        return os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a file, or no terminal behind it
        return os.terminal_size((0, 0))


def is_terminal(stream: TextIO) -> bool:
    """A terminal that can redraw a line (not TERM=dumb, e.g. an editor's shell buffer)."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def for_stream(stream: TextIO | None = None, *, quiet: bool = False) -> Progress:
    """The form for ``stream`` (default stderr): nothing when quiet, a bar on a terminal, else lines."""
    stream = stream or sys.stderr
    if quiet:
        return Progress()
    if is_terminal(stream):
        return Bar(stream)
    return Lines(lambda text: print(text, file=stream, flush=True))


def as_progress(progress: Progress | Callable[[str], None] | None) -> Progress:
    """What the runners accept: a :class:`Progress`, a function taking a line (the plain form, written
    through it), or None (nothing)."""
    if progress is None:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    return Lines(progress)
