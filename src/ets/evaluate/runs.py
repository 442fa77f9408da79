"""The one reader of run directories, for ``ets evaluate``, ``ets report`` and ``ets view``: a run's
``run.json``, ``stats.log`` and tree files, each checked for what the commands rely on, with errors
that name the file and what is wrong with it; the prompt format its answers are read in; its name in
a table or a page; and which paths are a run's own files, that no command writes over.

Here, below both :mod:`ets.evaluate.report` and :mod:`ets.view`, so that the report can build the
runs' tree pages while the viewer reads runs the same way the report does.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ets.evaluate.answers import (
    ANSWERS_NAME,
    RUN_JSON,
    RunFileError,
    find_answers,
    read_json,
    read_text,
    score_flaw,
    validate_answers,
)
from ets.files import NAME_MAX, overlong_part
from ets.stats import STATS_LOG_LABELS

STATS_LOG = "stats.log"
TREES = "trees"

# stats.log line label, lower case (read case-insensitively) -> field
STATS_LOG_KEYS = {label.lower(): name for name, label in STATS_LOG_LABELS.items()}

# the config keys the commands read, and what each must be (null is always allowed: not set)
CONFIG_KINDS = {
    "width": "whole", "max_depth": "whole", "max_tokens": "number", "temperature": "number",
    "select_method": "text", "prompt_format": "text", "policy_model_type": "text", "retire_empty_steps": "bool",
}


class ReportError(RunFileError):
    """A run directory that cannot be read or used; the message names the path."""


METHOD_LABELS = {
    "softmax_costmodel": "ETS",
    "softmax": "REBASE",
    "beam_search": "beam search",
    "dvts": "DVTS",
    "best_of_n": "best-of-N",
    "particle_filtering": "particle filtering",
}


def run_label(method: str, width: int | None, temperature: float | None = None) -> str:
    """"ETS width 16": a run's method, by its common name, and its width; "greedy" for one sample at
    temperature 0."""
    if method == "best_of_n" and width == 1 and temperature == 0:
        return "greedy"
    label = METHOD_LABELS.get(method, method)
    return label if width is None else f"{label} width {width}"


def model_type_of(config: dict) -> str:
    """The prompt format a run's answers are read in: ``run.json``'s config
    (``prompt_format``, else ``policy_model_type``), else llemma as the reference."""
    return config.get("prompt_format") or config.get("policy_model_type") or "llemma"


# -- checking what was read --------------------------------------------------------------------------------

def _is_amount(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _kind_flaw(value: Any, kind: str) -> str:
    ok = {
        "whole": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "number": _is_amount,
        "text": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
    }[kind]
    if value is None or ok(value):
        return ""
    wanted = {"whole": "a whole number", "number": "a finite number of at least 0", "text": "a string",
              "bool": "true or false"}[kind]
    return f"is {value!r}, expected {wanted}"


def _config_flaw(config: Any, where: str) -> str:
    if not isinstance(config, dict):
        return f"'{where}' is a JSON {type(config).__name__}, expected an object of settings"
    for key, kind in CONFIG_KINDS.items():
        flaw = _kind_flaw(config.get(key), kind)
        if flaw:
            return f"{where}.{key} {flaw}"
    return ""


def _stats_flaw(stats: Any, where: str) -> str:
    if not isinstance(stats, dict):
        return f"'{where}' is a JSON {type(stats).__name__}, expected an object of figures"
    for key, value in stats.items():
        if value is not None and not _is_amount(value):
            return f"{where}.{key} is {value!r}, expected a finite number of at least 0"
    return ""


# -- run.json, stats.log, tree files ---------------------------------------------------------------------

def read_run_json(run_dir: Path) -> dict:
    """A run directory's ``run.json`` as written by ``ets run``; ``{}`` when it has none (a reference run).
    Its ``config`` and ``stats``, when there, are objects whose keys the commands read are of their kinds."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return {}
    run_json = read_json(path, ReportError)
    if not isinstance(run_json, dict):
        raise ReportError(f"{path}: a JSON {type(run_json).__name__}, expected an object with 'config' and 'stats'")
    flaw = ((_config_flaw(run_json["config"], "config") if "config" in run_json else "")
            or (_stats_flaw(run_json["stats"], "stats") if "stats" in run_json else ""))
    if flaw:
        raise ReportError(f"{path}: {flaw}")
    return run_json


def run_config(run_dir: Path) -> dict:
    """The config of a run's ``run.json`` ({} when it has none)."""
    return read_run_json(run_dir).get("config") or {}


def _number(text: str, path: Path, line: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not _is_amount(value):
        raise ReportError(f"{path}: line {line!r} holds no finite number of at least 0")
    return value


def read_stats_log(path: str | Path) -> dict[str, int | float]:
    """The figures of a ``stats.log`` (``Total KV cache size: N`` ...), by field name."""
    path = Path(path)
    stats: dict[str, int | float] = {}
    for line in read_text(path, ReportError).splitlines():
        if ":" not in line:
            continue
        label, value = line.split(":", 1)
        key = STATS_LOG_KEYS.get(label.strip().lower())
        if key:
            stats[key] = _number(value, path, line)
    missing = [label for label, key in STATS_LOG_KEYS.items() if key not in stats]
    if missing:
        expected = ", ".join(f"'{label}: {'S' if name == 'time' else 'N'}'" for name, label in STATS_LOG_LABELS.items())
        raise ReportError(f"{path}: missing line(s) {', '.join(repr(m) for m in missing)} (expected {expected})")
    return stats


def read_tree_file(path: Path) -> dict:
    """A tree file of ``ets run`` (``trees/q{id}.json``): its ``answer`` a problem as in answers.json, its
    ``nodes`` a non-empty list of objects with PRM scores, its ``stats`` and ``fingerprint`` (when there)
    of their kinds. The nodes' links are checked where the tree is built (:meth:`ets.Tree.from_nodes`)."""
    data = read_json(path, ReportError)
    if not isinstance(data, dict) or not isinstance(data.get("answer"), dict) or "nodes" not in data:
        got = f"a JSON {type(data).__name__}" if not isinstance(data, dict) else f"keys {sorted(data)}"
        raise ReportError(f"{path}: not a tree file of `ets run` ({got}; expected an object with nodes, answer, stats)")
    validate_answers([data["answer"]], path, name="'answer'")
    nodes = data["nodes"]
    if not isinstance(nodes, list) or not nodes:
        raise ReportError(f"{path}: 'nodes' is {'empty' if nodes == [] else repr(nodes)[:40]}, expected the tree's "
                          "nodes (the root first)")
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise ReportError(f"{path}: nodes[{i}] is a JSON {type(node).__name__}, expected an object")
        flaw = score_flaw(node.get("score")) if "score" in node else ""
        if flaw:
            raise ReportError(f"{path}: nodes[{i}] (node {node.get('id')!r}): score is {flaw}")
    fingerprint = data.get("fingerprint")
    flaw = (_stats_flaw(data["stats"], "stats") if data.get("stats") is not None else "") or (
        "'fingerprint' is not an object" if fingerprint is not None and not isinstance(fingerprint, dict) else "")
    if not flaw and isinstance(fingerprint, dict) and fingerprint.get("config") is not None:
        flaw = _config_flaw(fingerprint["config"], "fingerprint.config")
    if flaw:
        raise ReportError(f"{path}: {flaw}")
    return data


# -- one dataset ---------------------------------------------------------------------------------------------

def _short(text: str, limit: int = 50) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")


def other_questions(first: Mapping[Any, Any], second: Mapping[Any, Any],
                    names: tuple[str, str] = ("one", "the other")) -> str:
    """How two runs' problems (question by problem id) show they are not of one dataset: '' when every
    id they share holds the same question (runs without questions, as some of the reference's, cannot
    tell). Ids are compared as text, as tree files and pages name problems."""
    by_id = {str(k): q for k, q in second.items()}
    for key, question in first.items():
        there = by_id.get(str(key))
        if question is not None and there is not None and question != there:
            return f"problem {key} is {_short(question)} in {names[0]} and {_short(there)} in {names[1]}"
    return ""


def questions_of(problems: Iterable[dict]) -> dict[Any, Any]:
    """Question by problem id, of the problems of an answers file."""
    return {p.get("id", i): p.get("question") for i, p in enumerate(problems)}


# -- what no command writes over -------------------------------------------------------------------------------

def _is_run_dir(path: Path) -> bool:
    return (path / RUN_JSON).is_file() or (path / ANSWERS_NAME).is_file()


def own_file(path: str | os.PathLike, reads: Iterable[str | os.PathLike] = ()) -> str:
    """What ``path`` is, if it is a file the command reads (``reads``) or one of a run directory's own files
    (its answers file, run.json, stats.log, anything in trees/); '' when it is neither."""
    target = Path(os.path.realpath(path))
    if any(target == Path(os.path.realpath(r)) for r in reads):
        return "a file this command reads"
    for parent in target.parents:
        if parent.name == TREES and _is_run_dir(parent.parent):
            return f"in the trees/ of the run {parent.parent}"
    if target.name == TREES and _is_run_dir(target.parent):
        return f"the trees/ of the run {target.parent}"
    run_dir = target.parent
    if _is_run_dir(run_dir) and (target.name in (ANSWERS_NAME, RUN_JSON, STATS_LOG)
                                 or (target.suffix == ".json" and target == find_answers(run_dir))):
        return f"the {target.name} of the run {run_dir}"
    return ""


def check_output(path: str | os.PathLike, flag: str, reads: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output path that is a file the command reads or a run's own file."""
    what = own_file(path, reads)
    if what:
        raise ReportError(f"{flag} {path} is {what}; no command writes over its inputs or a run's files: "
                          "choose another path")


def os_error(exc: OSError, doing: str = "") -> tuple[str, int]:
    """A one-line message for a failed file operation, naming the path, and its exit status: 2 for a path
    that cannot be (a name too long), 1 for a failure (a full disk, no permission)."""
    name = os.fsdecode(exc.filename) if exc.filename is not None else ""
    if exc.errno == errno.ENAMETOOLONG:
        parts, i = Path(name).parts, overlong_part(name)
        if i is not None:  # named up to that part: the failing path may lie below it
            return (f"{Path(*parts[:i + 1])}: a name {len(os.fsencode(parts[i]))} bytes long; the file system "
                    f"allows {NAME_MAX}"), 2
        return f"{name}: the path is too long ({len(os.fsencode(name))} bytes)", 2
    return f"{doing + ' ' if doing else ''}{name}: {exc.strerror or exc}", 1
