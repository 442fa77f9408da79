"""Benches write what they print to docs/results.md: one section per command, saying which commit and
which machine printed it. The page is data: a bench run replaces the section of the same command (git
keeps the earlier ones) and adds a new one for a new command; the README quotes the page.

    if __name__ == "__main__":
        with recorded():          # `--no-record` on the command line: print only
            main()

Only a run that ends without an error is written. Paths of the checkout and the home folder are written
relative (`.`, `~`), so the page names no machine's folders.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
NO_RECORD = "--no-record"
HEADER = """# Results

What the benches in `bench/` printed, each under the command that printed it, with the commit it ran on
and the machine. Each section is written by the bench itself (`bench/results.py`) and replaced by the
next run of the same command; git keeps the earlier ones. Rerun a command to check a figure on your
machine; `--no-record` prints without writing here.
"""


class _Tee(io.TextIOBase):
    """Writes go to the terminal as usual and into a buffer for the page."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.buffer = io.StringIO()

    def write(self, text: str) -> int:
        self.buffer.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit() -> str:
    """The short commit, marked when tracked files other than the results page differ from it (the figure is
    then of a changed tree)."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{PAGE.relative_to(ROOT)}")
    return f"{head} with uncommitted changes" if changed else head


def machine() -> str:
    """CPU model, cores, the widest vector extension llama.cpp can use, memory."""
    model, flags, memory = "unknown CPU", set(), ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = " ".join(value.split())
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {os.cpu_count()} cores, {vector}{memory}"


def relative(text: str) -> str:
    """The checkout's and the home folder's absolute paths written as `.` and `~`."""
    for path, short in ((str(ROOT), "."), (str(Path.home()), "~")):
        text = re.sub(re.escape(path) + r"(?=/|\b)", short, text)
    return text


def command(argv: list[str]) -> str:
    script = Path(argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else Path(script.name)
    return relative(shlex.join(["python", str(shown), *argv[1:]]))


def section(cmd: str, printed: str, at_commit: str, when: dt.date | None = None) -> str:
    when = when or dt.date.today()
    return (f"## `{cmd}`\n\ncommit `{at_commit}`, {when.isoformat()}, {machine()}\n\n"
            f"```text\n{relative(printed).rstrip()}\n```\n")


def write_section(cmd: str, printed: str, page: Path = PAGE, at_commit: str | None = None) -> Path:
    """Replace the section of ``cmd`` on ``page`` (or add it), leaving the others as they are."""
    text = page.read_text(encoding="utf-8") if page.exists() else HEADER
    new = section(cmd, printed, at_commit or commit())
    heading = f"## `{cmd}`\n"
    sections = re.split(r"(?m)^(?=## `)", text)
    for i, old in enumerate(sections):
        if old.startswith(heading):
            sections[i] = new + ("\n" if i < len(sections) - 1 else "")
            break
    else:
        sections[-1] = sections[-1].rstrip("\n") + "\n\n"
        sections.append(new)
    tmp = page.with_name(f".{page.name}.tmp")
    tmp.write_text("".join(sections), encoding="utf-8")
    tmp.replace(page)
    return page


@contextlib.contextmanager
def recorded(page: Path = PAGE, enabled: bool = True) -> Iterator[None]:
    """Print as usual; when the block ends without an error, write what was printed to ``page`` (unless
    ``enabled`` is false or the command line says ``--no-record``)."""
    if NO_RECORD in sys.argv:
        sys.argv.remove(NO_RECORD)
        enabled = False
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):  # argparse's help exits 0, and is no result
        enabled = False
    cmd = command(sys.argv)
    measured = commit()  # the tree the bench starts on (commits made while it runs measured nothing)
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    finished = False
    try:
        yield
        finished = True
    except SystemExit as exc:  # `sys.exit(main())`: a success when the status is 0
        finished = exc.code in (0, None)
        raise
    finally:
        sys.stdout = tee.stream
        if finished and enabled and tee.buffer.getvalue().strip():
            write_section(cmd, tee.buffer.getvalue(), page, measured)
            print(f"(written to {page.relative_to(ROOT) if page.is_relative_to(ROOT) else page})", file=sys.stderr)
