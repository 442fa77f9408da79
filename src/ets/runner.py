"""Datasets in, files out: many problems at once, per-problem checkpoints, atomic writes.

A run directory holds::

    answers.json   the reference's schema (docs/algorithm.md#the-answers-file), each trajectory with its ``steps``
    stats.log      the reference's four lines
    run.json       resolved config, statistics, versions, timings
    trees/q{id}.json  one problem's whole tree; also its checkpoint

A problem whose tree file exists (same question, same settings) is not
searched again, so an interrupted run resumes where it stopped.

A run directory belongs to one dataset and config: a run of another (a
question or a setting differs, or the finished answers.json holds problems this
run does not have) is refused with :class:`RunDirError` naming what differs,
unless it starts afresh (``resume=False``, ``ets run --overwrite``), which first
removes the earlier run's files. Checkpoints of problems beyond this run (an
extension to more problems, interrupted) are kept and no reason to refuse. A
checkpoint that cannot be used (damaged, or searched with other backends) is
dropped and its problem searched again; the resume says how many it took and
dropped, and why. Ground truths always come from the dataset as it is now.

The finished files (answers.json, stats.log, run.json) of an earlier run stay
until this run's replace them, all three at its end: an extension that is
interrupted loses nothing, and the earlier command still resumes to them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import glob
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from ets.backends.base import Backends, Policy
from ets.config import SearchConfig
from ets.datasets import Problem
from ets.files import json_text, write_all, write_json
from ets.progress import Progress, as_progress
from ets.search import SearchError, SearchResult, prompt_overflow, prompt_text, search
from ets.stats import SearchStats

# keys that change how a run is carried out, not what it computes
NON_RESULT_KEYS = ("num_threads", "store_path")
CHECKPOINT_NAME = re.compile(r"q(\d+)\.json")
SUMMARY_FILES = ("stats.log", "run.json")  # written at the end, beside the answers file
OVERWRITE_HINT = "pass --overwrite to replace it, or choose another --output_path"


class RunDirError(ValueError):
    """A run directory that cannot take this run: it holds another run, or cannot be
    written. The message names the directory, what is wrong and what to do."""


@dataclass
class RunSummary:
    run_dir: Path
    config: SearchConfig
    stats: SearchStats
    answers: list[dict]
    resumed: int  # problems taken from an earlier run's checkpoints
    dropped: int = 0  # checkpoints found but not usable (damaged, other backends): searched again


def answer_entry(problem: Problem, result: SearchResult) -> dict[str, Any]:
    """One problem of answers.json, in the reference's schema (plus each trajectory's steps)."""
    return {
        "id": problem.id,
        "question": problem.question,
        "model_answer": result.answers,
        "ground_truth_answer": problem.answer,
        "total_tokens": result.total_tokens,
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("ets", "numpy", "scipy", "llama_cpp_python", "sentence-transformers", "torch", "httpx"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def result_config(config: SearchConfig | dict[str, Any]) -> dict[str, Any]:
    """The keys of a config that change what a run computes."""
    data = config.to_dict() if isinstance(config, SearchConfig) else config
    return {k: v for k, v in data.items() if k not in NON_RESULT_KEYS}


def differences(then: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """``key THEN then, NOW now`` for every key whose value differs. A key absent on one side counts as
    its value in ``defaults``, if that has it: a run written before a config key existed ran as the
    key's default does (that is what a new key's default is for)."""
    missing = object()
    defaults = defaults or {}
    out = []
    for key in sorted(set(then) | set(now), key=str):
        a, b = then.get(key, defaults.get(key, missing)), now.get(key, defaults.get(key, missing))
        if a != b:
            show = lambda v: "absent" if v is missing else repr(v)  # noqa: E731
            out.append(f"{key} {show(a)} then, {show(b)} now")
    return out


def checkpoint_files(trees: Path) -> list[Path]:
    if not trees.is_dir():
        return []
    return sorted((p for p in trees.iterdir() if CHECKPOINT_NAME.fullmatch(p.name)),
                  key=lambda p: int(CHECKPOINT_NAME.fullmatch(p.name).group(1)))


def _is_amount(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _checkpoint_flaw(saved: Any) -> str:
    """What keeps a parsed tree file from being a checkpoint; '' when nothing does."""
    if not isinstance(saved, dict):
        return f"a JSON {type(saved).__name__}, not a checkpoint object"
    fingerprint, answer, stats = saved.get("fingerprint"), saved.get("answer"), saved.get("stats")
    if not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("config"), dict):
        return "no 'fingerprint' holding the run's config"
    if not (isinstance(answer, dict) and isinstance(answer.get("question"), str)
            and isinstance(answer.get("model_answer"), list)):
        return "no 'answer' holding 'question' and 'model_answer'"
    if not isinstance(stats, dict) or not all(_is_amount(stats.get(f.name, 0)) for f in fields(SearchStats)):
        return "bad 'stats' (expected a non-negative number for each statistic)"
    if not _is_amount(saved.get("run_elapsed", 0.0)):
        return "bad 'run_elapsed'"
    return ""


def read_checkpoint(path: Path) -> tuple[dict[str, Any] | None, str]:
    """A tree file's contents, or None and why it cannot be used."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError:
        return None, "not valid JSON"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    flaw = _checkpoint_flaw(saved)
    return (None, flaw) if flaw else (saved, "")


def _read_json(path: Path) -> Any:
    """A file of ours written earlier, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def foreign_run(run_dir: str | Path, problems: Sequence[Problem], config: SearchConfig,
                answers_name: str = "answers.json") -> str:
    """Why ``run_dir`` holds another run than this one (another question, a finished answers file
    with problems this run does not have, or other settings); '' when this run may resume in it.

    A checkpoint of a problem this run does not have is no reason: the problem is another
    command's (a larger ``--num_samples`` interrupted), its file is kept, and this run reads only
    its own problems' (questions compared). Replacing a finished answers file by one that lacks
    some of its problems would lose them from view, so that is refused."""
    run_dir = Path(run_dir)
    by_id = {p.id: p for p in problems}
    now, defaults = result_config(config), result_config(SearchConfig())
    reasons: list[str] = []
    other_question: tuple[Problem, str] | None = None
    not_here: set[Any] = set()
    setting_changes: dict[str, None] = {}
    checkpoints = 0

    def compare(problem_id: Any, question: Any, finished: bool) -> None:
        nonlocal other_question
        if problem_id not in by_id:
            if finished:
                not_here.add(problem_id)
        elif question != by_id[problem_id].question and other_question is None:
            other_question = (by_id[problem_id], str(question))

    for path in checkpoint_files(run_dir / "trees"):
        saved, _ = read_checkpoint(path)
        if saved is None:
            continue  # damaged: dropped (and said so) when the run resumes
        checkpoints += 1
        compare(int(CHECKPOINT_NAME.fullmatch(path.name).group(1)), saved["answer"]["question"], finished=False)
        setting_changes.update(dict.fromkeys(differences(saved["fingerprint"]["config"], now, defaults)))
    run_json = _read_json(run_dir / "run.json")
    if isinstance(run_json, dict) and isinstance(run_json.get("config"), dict):
        setting_changes.update(dict.fromkeys(differences(result_config(run_json["config"]), now, defaults)))
    answers_path = run_dir / answers_name
    if answers_path.is_file():
        answers = _read_json(answers_path)
        entries = [a for a in answers if isinstance(a, dict)] if isinstance(answers, list) else []
        for entry in entries:
            compare(entry.get("id"), entry.get("question"), finished=True)
        if not checkpoints and not isinstance(run_json, dict):
            reasons.append(f"{answers_name} with no run.json or checkpoints beside it (not an `ets run`)")
    if other_question is not None:
        problem, then = other_question
        reasons.append(f"{problem.label} is another question ({_short(then)!r} then, {_short(problem.question)!r} now)")
    if not_here:
        ids = sorted(not_here, key=str)
        reasons.append(f"its finished {answers_name} holds {len(ids)} problem(s) this run does not have "
                       f"(ids {_short(', '.join(map(str, ids)))}; this run has {len(problems)})")
    if setting_changes:
        changes = list(setting_changes)
        more = f" and {len(changes) - 4} more" if len(changes) > 5 else ""
        reasons.append("other settings: " + "; ".join(changes[:4] if more else changes) + more)
    return f"{run_dir} holds another run: {', '.join(reasons)}; {OVERWRITE_HINT}" if reasons else ""


def check_writable(run_dir: str | Path, answers_name: str = "answers.json") -> None:
    """Refuse a run directory that cannot be written, before any model loads; leave nothing behind."""
    run_dir = Path(run_dir)
    trees = run_dir / "trees"
    for part, what in ((trees, "where the run keeps its checkpoints"),
                       *((part, "the run directory") for part in (run_dir, *run_dir.parents))):
        if part.exists() and not part.is_dir():
            raise RunDirError(f"{part} is a file, not a directory ({what}); move it away or choose another "
                              "--output_path")
    for name in (answers_name, *SUMMARY_FILES):
        if (run_dir / name).is_dir():
            raise RunDirError(f"{run_dir / name} is a directory, where the run writes its {name}; move it away "
                              "or choose another --output_path")
    created: list[Path] = []
    try:
        for part in reversed((trees, *trees.parents)):
            if not part.exists():
                part.mkdir()
                created.append(part)
        for directory in (run_dir, trees):
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".ets-write-check.")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        where = exc.filename or run_dir
        raise RunDirError(f"cannot write the run directory {run_dir} ({where}: {exc.strerror}); "
                          "choose another --output_path") from None
    finally:
        for part in reversed(created):
            try:
                part.rmdir()
            except OSError:
                pass


class RunWriter:
    """Everything a runner writes, in one place: checkpoints in, one tree file per
    finished problem, then answers.json, stats.log and run.json. Local and
    distributed runners differ only in how they get the searches done."""

    def __init__(self, run_dir: str | Path, config: SearchConfig, description: dict[str, Any],
                 problems: Sequence[Problem], *, answers_name: str = "answers.json",
                 progress: Progress | Callable[[str], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.trees = self.run_dir / "trees"
        self.config = config
        self.description = description
        self.problems = list(problems)
        self.answers_name = answers_name
        self.progress = as_progress(progress)
        self.fingerprint = {"config": result_config(config), "backends": description}
        self.entries: dict[int, dict] = {}
        self.stats: dict[int, SearchStats] = {}
        self.resumed = 0
        self.dropped = 0
        self.elapsed_before = 0.0  # wall time earlier invocations spent on the checkpoints resumed
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self.started = time.perf_counter()

    def resume(self, enabled: bool = True) -> list[Problem]:
        """Take finished problems from earlier checkpoints; return those still to search.

        ``enabled=False`` starts afresh: the earlier run's files are removed first.
        Raises :class:`RunDirError` when the directory holds another run (unless starting afresh)."""
        if enabled:
            why = foreign_run(self.run_dir, self.problems, self.config, self.answers_name)
            if why:
                raise RunDirError(why)
        self.trees.mkdir(parents=True, exist_ok=True)
        if not enabled:
            # the earlier run is replaced as asked: its final files would describe another run than
            # the checkpoints beside them, so they go with the checkpoints
            finals = [self.run_dir / name for name in (self.answers_name, *SUMMARY_FILES)]
            for path in [*checkpoint_files(self.trees), *finals]:
                path.unlink(missing_ok=True)
            self.start(self.problems)
            return list(self.problems)
        todo = []
        dropped: dict[str, list[str]] = {}
        for problem in self.problems:
            path = self.trees / f"q{problem.id}.json"
            if not path.exists():
                todo.append(problem)
                continue
            saved, why = read_checkpoint(path)
            if saved is not None and saved["fingerprint"].get("backends") != self.description:
                then = saved["fingerprint"].get("backends")
                changes = differences(then if isinstance(then, dict) else {}, self.description)
                saved, why = None, "searched with other backends: " + "; ".join(changes)
            if saved is None:
                dropped.setdefault(why, []).append(path.name)
                todo.append(problem)
                continue
            # the ground truth as the dataset has it now, whatever it was when the problem was searched
            self.entries[problem.id] = {**saved["answer"], "ground_truth_answer": problem.answer}
            self.stats[problem.id] = SearchStats.from_dict(saved["stats"])
            self.elapsed_before = max(self.elapsed_before, saved.get("run_elapsed", 0.0))
        self.resumed = len(self.entries)
        self.dropped = sum(len(names) for names in dropped.values())
        mine = {f"q{p.id}.json" for p in self.problems}
        beyond = sum(path.name not in mine for path in checkpoint_files(self.trees))
        if self.resumed or self.dropped or beyond:
            said = f"{self.run_dir}: {self.resumed} of {len(self.problems)} problems taken from checkpoints"
            if dropped:
                said += f", {self.dropped} dropped and searched again: " + "; ".join(
                    ", ".join(names[:5]) + (", …" if len(names) > 5 else "") + f" ({why})"
                    for why, names in dropped.items())
            if beyond:
                said += f"; {beyond} checkpoint(s) of problems beyond this run kept"
            self.progress.message(said)
        self.start(todo)
        return todo

    def start(self, todo: Sequence[Problem]) -> None:
        """Work is about to start: temporary files of a write cut short (a killed run) are litter.
        An earlier run's final files stay until :meth:`finish` replaces them: they are a finished
        run's, and an interruption must not lose them. The progress starts at the problems already done."""
        litter = [*self.trees.glob(".q*.json.*.tmp")]
        for name in (self.answers_name, *SUMMARY_FILES):
            litter += self.run_dir.glob(f".{glob.escape(name)}.*.tmp")
        for path in litter:
            path.unlink(missing_ok=True)
        self.progress.start(str(self.run_dir), len(self.problems), len(self.problems) - len(todo))

    def elapsed(self) -> float:
        """The run's wall time so far, earlier invocations' included."""
        return self.elapsed_before + time.perf_counter() - self.started

    def record(self, problem: Problem, result: SearchResult) -> None:
        """A finished problem: its tree file (the checkpoint) is written at once."""
        entry = answer_entry(problem, result)
        write_json(self.trees / f"q{problem.id}.json", {
            "fingerprint": self.fingerprint,
            "answer": entry,
            "stats": result.stats.to_dict(),
            "run_elapsed": self.elapsed(),
            "nodes": result.tree.to_dicts(),
        })
        self.entries[problem.id] = entry
        self.stats[problem.id] = result.stats
        self.progress.done()

    def finish(self, extra: dict[str, Any] | None = None, *, server: dict[str, Any] | None = None,
               searched: set[int] | None = None) -> RunSummary:
        """``server``: the server's own counters over this invocation (they replace the sum over the problems
        it ``searched``, whose spans overlap)."""
        stats = SearchStats()
        for problem in self.problems:
            stats.add(self.stats[problem.id])
        if server:
            earlier = SearchStats()
            for problem in self.problems:
                if problem.id not in (searched or set()):
                    earlier.add(self.stats[problem.id])
            earlier.add(SearchStats(**server))
            for name in server:
                setattr(stats, name, getattr(earlier, name))
        stats.time = self.elapsed()  # the run's wall time (over every invocation), not the sum over problems
        answers = [self.entries[p.id] for p in self.problems]
        installed = versions()
        summary = {
            "ets_version": installed.get("ets"),
            "config": self.config.to_dict(),
            "stats": stats.to_dict(),
            "num_problems": len(self.problems),
            "resumed_problems": self.resumed,
            "backends": self.description,
            "versions": installed,
            "command": sys.argv,
            "started_at": self.started_at.isoformat(),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            **(extra or {}),
        }
        # the three replace the earlier run's together: none is renamed until all are written
        write_all({self.run_dir / self.answers_name: json_text(answers),
                   self.run_dir / "stats.log": stats.stats_log(),
                   self.run_dir / "run.json": json_text(summary)})
        return RunSummary(run_dir=self.run_dir, config=self.config, stats=stats, answers=answers, resumed=self.resumed,
                          dropped=self.dropped)


async def run_problems(
    problems: Sequence[Problem],
    config: SearchConfig,
    backends: Backends,
    run_dir: str | Path,
    *,
    answers_name: str = "answers.json",
    resume: bool = True,
    progress: Progress | Callable[[str], None] | None = None,
) -> RunSummary:
    """Search every problem (``num_threads`` at once) and write the run directory; ``progress`` hears of
    each problem done (:mod:`ets.progress`; a function taking a line gets plain lines)."""
    writer = RunWriter(run_dir, config, backends.description, problems, answers_name=answers_name, progress=progress)
    try:
        return await _search_all(writer, writer.resume(enabled=resume), config, backends)
    finally:
        writer.progress.close()  # a failed or interrupted run's bar too: the error line goes below it


async def _search_all(writer: RunWriter, todo: list[Problem], config: SearchConfig, backends: Backends) -> RunSummary:
    await check_prompts_fit(todo, config, backends.policy)
    gate = asyncio.Semaphore(config.num_threads)
    watch = await server_watch(backends.policy)  # the policy server's own KV figures, where it reports them

    async def one(problem: Problem) -> None:
        async with gate:
            if watch:
                await watch.begin(problem.id)
            result = await search(
                problem.question, config, policy=backends.policy, reward=backends.reward,
                embedder=backends.embedder, problem_id=problem.id,
            )
            if watch:
                for name, value in (await watch.end(problem.id)).items():
                    setattr(result.stats, name, value)
        writer.record(problem, result)

    tasks = [asyncio.create_task(one(p)) for p in todo]
    try:
        if watch:
            await watch.begin(RUN_SPAN)
        await asyncio.gather(*tasks)
        # the run's counters over its own span (problems searched at once overlap theirs), plus the problems
        # an earlier invocation searched
        server = await watch.end(RUN_SPAN) if watch else None
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if watch:
            await watch.aclose()
    return writer.finish({"protocols": protocols_of(backends)}, server=server, searched={p.id for p in todo})


def protocols_of(backends: Backends) -> dict[str, str]:
    """The API each role was asked through (run.json's ``protocols``): only HTTP backends name one."""
    found = {role: getattr(model, "protocol", None) for role, model in
             (("policy", backends.policy), ("reward", backends.reward))}
    return {role: protocol for role, protocol in found.items() if protocol}


RUN_SPAN = "run"  # the watch's span of the whole invocation


async def server_watch(policy: Policy):
    """A :class:`~ets.backends.http.metrics.ServerWatch` of the policy's servers when they report KV figures
    (vLLM's or SGLang's /metrics), else None."""
    hosts = getattr(policy, "hosts", None)
    if not hosts:
        return None
    from ets.backends.http.metrics import ServerWatch  # httpx: loaded only by runs against model servers

    watch = ServerWatch(hosts)
    if await watch.available():
        return watch
    await watch.aclose()
    return None


async def check_prompts_fit(problems: Sequence[Problem], config: SearchConfig, policy: Policy) -> None:
    """Refuse, before any search starts, a problem whose prompt leaves no room for a step
    (counted by the policy's tokenizer)."""
    prompts = [prompt_text(config, p.question) for p in problems]
    counts = await asyncio.gather(*(policy.count_tokens(prompt) for prompt in prompts))
    for problem, tokens in zip(problems, counts):
        why = prompt_overflow(config, tokens, problem.label)
        if why:
            raise SearchError(why)


def sweep_dirs(output_dir: Path, widths: Sequence[int]) -> list[Path]:
    """Where each width's run goes: the output directory itself for one width,
    ``width_{W}/`` below it for a sweep."""
    if len(widths) == 1:
        return [output_dir]
    return [output_dir / f"width_{w}" for w in widths]
