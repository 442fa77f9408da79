"""Loading ``answers.json`` (ours and the reference's) with clear errors.

Below every other reader of runs (:mod:`ets.evaluate.runs`, :mod:`ets.view`): it holds the text and
JSON reading they share, whose errors name the file and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from ets.datasets import ANSWER_FIELDS

ANSWERS_NAME = "answers.json"
RUN_JSON = "run.json"

# PRM scores are probabilities (every PRM family and adapter ets reads gives p(good) in [0, 1]); a
# little slack for a server's rounding (exp of a log-probability a hair above 0)
SCORE_RANGE = (0.0, 1.0)
SCORE_SLACK = 1e-6


class RunFileError(ValueError):
    """A file of a run that cannot be read or used: the message names it and what is wrong."""


class AnswersFileError(RunFileError):
    """A missing or malformed answers file; the message names the path."""


def _fail(path, what: str) -> AnswersFileError:
    return AnswersFileError(f"{path}: {what}")


def read_text(path: str | os.PathLike, error: type[RunFileError] = RunFileError) -> str:
    """A run file's text (UTF-8; a byte-order mark, as the dataset reader accepts, is skipped)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None


def read_json(path: str | os.PathLike, error: type[RunFileError] = RunFileError) -> Any:
    """A run file's JSON (NaN and Infinity parse, as Python writes them; the readers check numbers)."""
    try:
        return json.loads(read_text(path, error))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, float) else repr(value)  # NaN, Infinity as the file has them


def score_flaw(value: Any) -> str:
    """Why ``value`` is not a PRM score ('' when it is one; ``None`` is one the PRM did not give)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{_show(value)}, not a number"
    low, high = SCORE_RANGE
    if not math.isfinite(value) or not low - SCORE_SLACK <= value <= high + SCORE_SLACK:
        # NaN compares false with everything: one NaN vote keeps its answer's total from ever winning
        return f"{_show(value)}, not a PRM score (a probability in [{low:g}, {high:g}])"
    return ""


def validate_answers(problems, path="answers.json", name: str = "") -> list[dict]:
    """Check the structure the evaluator relies on: a list of problems, each
    with ``model_answer`` (a list of ``{text, step_scores}``) and
    ``ground_truth_answer``; each step score a PRM score (:func:`score_flaw`).
    Extra keys (``steps``, ``total_tokens``, ...) are allowed. Returns the list.
    ``name``: how messages call a problem, when the file holds one (a tree file's ``'answer'``)."""
    if not isinstance(problems, list):
        raise _fail(path, f"expected a JSON list of problems, got {type(problems).__name__}")
    for i, problem in enumerate(problems):
        where = name or f"problem {i}"
        if not isinstance(problem, dict):
            raise _fail(path, f"{where}: expected an object, got {type(problem).__name__}")
        if "id" in problem:
            where += f" (id {problem['id']!r})"
        for key in ("model_answer", "ground_truth_answer"):
            if key not in problem:
                raise _fail(path, f"{where}: missing key {key!r} (expected keys: id, question, "
                                  "model_answer, ground_truth_answer, total_tokens)")
        candidates = problem["model_answer"]
        if not isinstance(candidates, list):
            raise _fail(path, f"{where}: 'model_answer' should be a list of {{text, step_scores}}, "
                              f"got {type(candidates).__name__}")
        for j, cand in enumerate(candidates):
            if not isinstance(cand, dict):
                raise _fail(path, f"{where}, model_answer[{j}]: expected an object {{text, step_scores}}, "
                                  f"got {type(cand).__name__}")
            text = cand.get("text")
            if not isinstance(text, str):  # the answer is read from the text: without it, nothing to grade
                got = "no 'text'" if text is None else f"'text' is a {type(text).__name__}"
                raise _fail(path, f"{where}, model_answer[{j}]: {got}; each trajectory needs its text (a string), "
                                  "the answer is read from it")
            scores = cand.get("step_scores")
            if not isinstance(scores, list):
                raise _fail(path, f"{where}, model_answer[{j}]: 'step_scores' should be a list of numbers, "
                                  f"got {type(scores).__name__}")
            for k, s in enumerate(scores):
                flaw = score_flaw(s)
                if flaw:
                    raise _fail(path, f"{where}, trajectory {j}: step_scores[{k}] is {flaw}; fix the scores "
                                      "or drop the trajectory")
    return problems


def ground_truth_gaps(problems: Sequence[dict], path, refuse_all: bool = True) -> str:
    """A warning naming the problems without a ground truth (``ground_truth_answer`` null: graded wrong
    whatever they answer); '' when every one has one. No ground truth at all is refused (unless
    ``refuse_all`` is false): the dataset's answer field had another name than `ets run` reads."""
    missing = [p.get("id", i) for i, p in enumerate(problems) if p.get("ground_truth_answer") is None]
    if not missing:
        return ""
    fields = ", ".join(ANSWER_FIELDS)
    if len(missing) == len(problems):
        what = (f"no ground truth for any problem (ground_truth_answer is null): the dataset's answer field was "
                f"not found (`ets run` reads the first of {fields}); rename it and run again")
        if refuse_all:
            raise _fail(path, what)
        return f"{path}: {what}"
    ids = ", ".join(map(str, missing[:5])) + (", …" if len(missing) > 5 else "")
    return (f"{path}: {len(missing)} of {len(problems)} problems have no ground truth (ground_truth_answer "
            f"is null; ids {ids}): they count as wrong")


def _holds_problems(path: Path) -> bool:
    try:
        data = read_json(path)
    except RunFileError:
        return False
    return isinstance(data, list) and bool(data) and all(isinstance(p, dict) and "model_answer" in p for p in data)


def find_answers(run_dir: str | os.PathLike) -> Path | None:
    """A run directory's answers file: ``answers.json``, else the one JSON file beside it holding a list of
    problems (``ets run --output_path DIR/results.json``: run.json does not record the name); None when
    there is none."""
    run_dir = Path(run_dir)
    if (run_dir / ANSWERS_NAME).is_file():
        return run_dir / ANSWERS_NAME
    found = [p for p in sorted(run_dir.glob("*.json"))
             if p.name != RUN_JSON and not p.name.startswith(".") and p.is_file() and _holds_problems(p)]
    if len(found) > 1:
        raise _fail(run_dir, f"no {ANSWERS_NAME}, and {len(found)} JSON files holding answers "
                             f"({', '.join(p.name for p in found)}); name the one to read")
    return found[0] if found else None


def resolve_answers_path(path: str | os.PathLike) -> Path:
    """A run directory stands for its answers file (:func:`find_answers`)."""
    p = Path(path)
    if p.is_dir():
        p = find_answers(p) or p / ANSWERS_NAME
    return p


def load_answers(path: str | os.PathLike) -> list[dict]:
    """Read and validate an ``answers.json`` (or a run directory holding one)."""
    p = resolve_answers_path(path)
    if not p.exists():
        raise AnswersFileError(f"{p}: no such file (expected an answers.json written by `ets run` "
                               "or the reference search)")
    return validate_answers(read_json(p, AnswersFileError), p)
