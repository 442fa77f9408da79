"""Writing files whole: every file ets writes goes to a temporary file beside it, then is renamed
over the target, so a reader never sees half a file and an interruption or a full disk leaves the
earlier file as it was.

Low in the package (it imports nothing of ets), so the runner and the readers of runs
(``ets evaluate``, ``report``, ``view``) share it without depending on each other.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Mapping

NAME_MAX = 255  # bytes in one name of a path (a file or a folder): the limit of ext4, xfs, btrfs, tmpfs and macOS
# a temporary name is ".{name}.{random}.tmp"; a long name is cut so the temporary one still fits in NAME_MAX
_TMP_NAME_CHARS = 200


def overlong_part(path: str | os.PathLike) -> int | None:
    """The index in ``Path(path).parts`` of the first name longer than NAME_MAX bytes; None when none is."""
    return next((i for i, part in enumerate(Path(path).parts) if len(os.fsencode(part)) > NAME_MAX), None)


def _temporary(path: Path) -> tuple[Path, int]:
    """A new file beside ``path``, open for writing; mode 0o666 less the umask (as a plain open gives),
    or the mode of the file it will replace."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666
    while True:
        tmp = path.with_name(f".{path.name[:_TMP_NAME_CHARS]}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        if mode != 0o666:
            os.fchmod(fd, mode)  # the replaced file's own mode, not narrowed by the umask
        return tmp, fd


def _write_aside(path: Path, data: str | bytes) -> Path:
    tmp, fd = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # a failed write names no file: the message should name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _target(path: str | os.PathLike) -> Path:
    # a link is written through, as open() does: the renaming must replace its target, not the link
    return Path(os.path.realpath(path))


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) via a temporary file and rename: readers never see a
    half-written file, and a failed write leaves the earlier one."""
    write_all({path: data})


def write_all(files: Mapping[str | os.PathLike, str | bytes]) -> None:
    """Write several files, each as :func:`write_atomic` does, but rename none until every one is
    written aside: a full disk or an interruption while writing leaves all the earlier files."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            target = _target(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.append((_write_aside(target, data), target))
        while staged:
            tmp, target = staged[0]
            os.replace(tmp, target)
            staged.pop(0)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def json_text(data: Any) -> str:
    """A file's JSON text as ets writes it: indented, UTF-8 as it is, ending in a newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_atomic(path, json_text(data))
