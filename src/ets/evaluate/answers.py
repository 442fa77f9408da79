"""Loading ``answers.json`` (ours and the reference's) with clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path


class AnswersFileError(ValueError):
    """A missing or malformed answers file; the message names the path."""


def _fail(path, what: str) -> AnswersFileError:
    return AnswersFileError(f"{path}: {what}")


def validate_answers(problems, path="answers.json") -> list[dict]:
    """Check the structure the evaluator relies on: a list of problems, each
    with ``model_answer`` (a list of ``{text, step_scores}``) and
    ``ground_truth_answer``. Extra keys (``steps``, ``total_tokens``, ...) are
    allowed. Returns the list."""
    if not isinstance(problems, list):
        raise _fail(path, f"expected a JSON list of problems, got {type(problems).__name__}")
    for i, problem in enumerate(problems):
        where = f"problem {i}"
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
            for s in scores:
                if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))):
                    raise _fail(path, f"{where}, model_answer[{j}]: 'step_scores' holds {s!r}, not a number")
    return problems


def resolve_answers_path(path: str | os.PathLike) -> Path:
    """A run directory stands for its ``answers.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / "answers.json"
    return p


def load_answers(path: str | os.PathLike) -> list[dict]:
    """Read and validate an ``answers.json`` (or a run directory holding one)."""
    p = resolve_answers_path(path)
    if not p.exists():
        raise AnswersFileError(f"{p}: no such file (expected an answers.json written by `ets run` "
                               "or the reference search)")
    try:
        with open(p, encoding="utf-8") as f:
            problems = json.load(f)
    except UnicodeDecodeError as exc:
        raise _fail(p, f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _fail(p, f"not valid JSON ({exc})") from None
    except OSError as exc:
        raise _fail(p, f"cannot read ({exc.strerror or exc})") from None
    return validate_answers(problems, p)
