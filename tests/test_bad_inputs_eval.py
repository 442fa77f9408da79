"""Bad inputs to ``ets evaluate``, ``ets report`` and ``ets view``: each is refused in one line naming
what to fix (exit 2; 1 for a failure while working), and no command leaves an output worse than it
found it (interrupted, out of disk, or pointed at a run's own files)."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from ets import files
from ets.cli import main

GSM8K = str(Path(__file__).resolve().parent / "data" / "gsm8k_sample.jsonl")


# -- writing aside ----------------------------------------------------------------------------------------

def test_write_atomic_replaces_whole_and_keeps_the_mode(tmp_path):
    target = tmp_path / "page.html"
    files.write_atomic(target, "first")
    assert target.read_text() == "first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()  # as a plain open() makes it
    target.chmod(0o640)
    files.write_atomic(target, b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG" and stat.S_IMODE(target.stat().st_mode) == 0o640
    link = tmp_path / "link.html"
    link.symlink_to(target)
    files.write_atomic(link, "through the link")
    assert link.is_symlink() and target.read_text() == "through the link"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "page.html"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_write_all_renames_nothing_until_every_file_is_written(tmp_path, monkeypatch, failure):
    (tmp_path / "a.md").write_text("old a")
    (tmp_path / "b.png").write_bytes(b"old b")
    real = files._write_aside
    calls = []

    def second_fails(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise failure
        return real(path, data)

    monkeypatch.setattr(files, "_write_aside", second_fails)
    with pytest.raises(type(failure)):
        files.write_all({tmp_path / "a.md": "new a", tmp_path / "b.png": b"new b"})
    assert (tmp_path / "a.md").read_text() == "old a" and (tmp_path / "b.png").read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.png"]  # no temporary file left
