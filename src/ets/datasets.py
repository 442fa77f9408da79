"""Problems in: local .jsonl / .json / .parquet files, built-in sets by name, hub datasets.

Every record is checked before any search starts; a bad one is refused with
``file:line`` and what was expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ets import models

# field names understood for the question and its ground truth, first match wins
QUESTION_FIELDS = ("problem", "question", "Problem", "Question", "input")
ANSWER_FIELDS = ("answer", "Answer", "solution", "target", "output")


class DatasetError(ValueError):
    """A dataset the user must fix; the message names the file and line."""


@dataclass(frozen=True)
class Problem:
    id: int
    question: str
    answer: Any  # the ground truth as the dataset has it (GSM8K: the solution ending '#### N')
    record: dict
    where: str = ""  # where the dataset has it: file:line, file[index]

    @property
    def label(self) -> str:
        """How messages name the problem: ``problem 3 (data.jsonl:4)``."""
        return f"problem {self.id}" + (f" ({self.where})" if self.where else "")


def read_text(path: Path) -> str:
    """A dataset file's text; unreadable bytes or files are refused naming the file (and line)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read the dataset {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not an error
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8") from None


def _records_jsonl(path: Path) -> Iterable[tuple[str, Any]]:
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg}); expected one JSON object per line") from None


def _records_json(path: Path) -> Iterable[tuple[str, Any]]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict):  # {"data": [...]} or {"test": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DatasetError(f"{path}: expected a JSON list of problems (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of problems")
    for index, record in enumerate(data):
        yield f"{path}[{index}]", record


def _records_parquet(path: Path) -> Iterable[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises its own kinds (ArrowInvalid, OSError, ...)
        raise DatasetError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())})") from None
    for index, record in enumerate(rows):
        yield f"{path}[row {index}]", record


def _records_hub(name: str, split: str) -> Iterable[tuple[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"{name!r} is not a local file or a built-in set ({', '.join(models.BUILTIN_DATASETS)}); "
            "loading it from the hub needs `pip install datasets`"
        ) from None
    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as exc:  # the hub library raises many kinds
        raise DatasetError(f"{name!r}: not a local file or built-in set, and the hub did not give it: {exc}") from None
    for index, record in enumerate(rows):
        yield f"{name}[{split}][{index}]", record


def _exists(path_or_name: str) -> bool:
    """Whether a local file or folder is there; a path the system cannot even look up (a name over
    255 bytes, a path too long) is refused naming it."""
    try:
        return Path(path_or_name).exists()
    except OSError as exc:
        raise DatasetError(f"dataset {path_or_name}: {exc.strerror}") from None


def resolve(path_or_name: str) -> Path | None:
    """A local path, or the file of a built-in set (gsm8k, math500, ...); None if neither."""
    path = Path(path_or_name)
    if _exists(path_or_name):
        return path
    if path_or_name.lower() in models.BUILTIN_DATASETS:
        return models.builtin_dataset_path(path_or_name)
    return None


def parse_record(where: str, record: Any, index: int) -> Problem:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object with a 'problem' or 'question' field, got {type(record).__name__}")
    question = next((record[f] for f in QUESTION_FIELDS if f in record), None)
    body = record.get("Body", record.get("body"))
    if isinstance(body, str) and isinstance(question, str):  # SVAMP / ASDiv: a story and its question
        question = f"{body.strip()} {question.strip()}"
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(
            f"{where}: no problem text; expected a non-empty string field 'problem' (MATH500) or 'question' (GSM8K), "
            f"found fields {sorted(record)}"
        )
    answer = next((record[f] for f in ANSWER_FIELDS if f in record), None)
    return Problem(id=index, question=question, answer=answer, record=record, where=where)


_SLICE_RE = re.compile(r"^(?P<name>.+)\[(?P<start>-?\d*):(?P<stop>-?\d*)(?::(?P<step>\d*))?\]$")


def split_slice(path_or_name: str) -> tuple[str, slice | None]:
    """``asdiv[10::20]`` -> (``asdiv``, slice(10, None, 20)): a dataset and the problems of it to take."""
    m = _SLICE_RE.match(path_or_name)
    if not m or _exists(path_or_name):
        return path_or_name, None
    bound = lambda group: int(m.group(group)) if m.group(group) else None  # noqa: E731
    if bound("step") == 0:
        raise DatasetError(f"{path_or_name}: a slice step must be at least 1")
    return m.group("name"), slice(bound("start"), bound("stop"), bound("step"))


def load_problems(path_or_name: str, num_samples: int | None = None, split: str = "test") -> list[Problem]:
    """All problems of a dataset (the first ``num_samples``), checked before any work starts.

    ``NAME[start:stop:step]`` takes a Python slice of the dataset (``asdiv[10::20]``: every 20th
    problem from the 10th); problems keep their ids in the whole dataset, and ``num_samples``
    counts within the slice."""
    asked = path_or_name
    path_or_name, selected = split_slice(path_or_name)
    path = resolve(path_or_name)
    # DATA.JSONL is a .jsonl file: suffixes are compared as the file systems of Windows and macOS do
    suffix = (path or Path(path_or_name)).suffix.lower()
    if path is None:
        if suffix in {".jsonl", ".json", ".parquet"}:
            raise DatasetError(f"dataset file not found: {path_or_name}")
        records = _records_hub(path_or_name, split)
    elif path.is_dir():
        raise DatasetError(f"{path}: is a directory; expected a .jsonl, .json or .parquet file")
    elif suffix == ".jsonl":
        records = _records_jsonl(path)
    elif suffix == ".json":
        records = _records_json(path)
    elif suffix == ".parquet":
        records = _records_parquet(path)
    else:
        raise DatasetError(f"{path}: unknown dataset format {path.suffix!r}; expected .jsonl, .json or .parquet")
    if selected is not None:
        records = [(where, record, index) for index, (where, record) in enumerate(records)]
        size, records = len(records), records[selected]
        if not records:  # the slice is what to fix, not the file behind a built-in set's name
            raise DatasetError(f"{asked}: the slice selects no problems; {path_or_name} has {size} "
                               f"(ids 0 to {size - 1})" if size else f"{asked}: {path_or_name} has no problems")
    else:
        records = ((where, record, index) for index, (where, record) in enumerate(records))
    problems = []
    for where, record, index in records:
        if num_samples is not None and len(problems) >= num_samples:
            break
        problems.append(parse_record(where, record, index))
    if not problems:
        raise DatasetError(f"{path or path_or_name}: no problems found")
    return problems
