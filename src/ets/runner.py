"""Datasets in, files out: many problems at once, per-problem checkpoints, atomic writes.

A run directory holds::

    answers.json   the reference's schema (docs/algorithm.md#the-answers-file), each trajectory with its ``steps``
    stats.log      the reference's four lines
    run.json       resolved config, statistics, versions, timings
    trees/q{id}.json  one problem's whole tree; also its checkpoint

A problem whose tree file exists (same question, same settings) is not
searched again, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ets.backends.base import Embedder, Policy, Reward
from ets.config import SearchConfig
from ets.datasets import Problem
from ets.search import SearchResult, search
from ets.stats import SearchStats

# keys that change how a run is carried out, not what it computes
NON_RESULT_KEYS = ("num_threads", "store_path")


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@dataclass
class Backends:
    policy: Policy
    reward: Reward
    embedder: Embedder | None = None
    description: dict[str, Any] = field(default_factory=dict)  # what serves the models, for run.json


@dataclass
class RunSummary:
    run_dir: Path
    config: SearchConfig
    stats: SearchStats
    answers: list[dict]
    resumed: int  # problems taken from an earlier run's checkpoints


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
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("ets", "numpy", "scipy", "llama_cpp_python", "sentence-transformers", "torch", "httpx"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class RunWriter:
    """Everything a runner writes, in one place: checkpoints in, one tree file per
    finished problem, then answers.json, stats.log and run.json. Local and
    distributed runners differ only in how they get the searches done."""

    def __init__(self, run_dir: str | Path, config: SearchConfig, description: dict[str, Any],
                 problems: Sequence[Problem], *, answers_name: str = "answers.json",
                 progress: Callable[[str], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.trees = self.run_dir / "trees"
        self.trees.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.description = description
        self.problems = list(problems)
        self.answers_name = answers_name
        self.progress = progress
        self.fingerprint = {
            "config": {k: v for k, v in config.to_dict().items() if k not in NON_RESULT_KEYS},
            "backends": description,
        }
        self.entries: dict[int, dict] = {}
        self.stats: dict[int, SearchStats] = {}
        self.resumed = 0
        self.elapsed_before = 0.0  # wall time earlier invocations spent on the checkpoints resumed
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self.started = time.perf_counter()

    def resume(self, enabled: bool = True) -> list[Problem]:
        """Take finished problems from earlier checkpoints; return those still to search."""
        if not enabled:
            self.start(self.problems)
            return list(self.problems)
        todo = []
        for problem in self.problems:
            saved = self._checkpoint(problem)
            if saved:
                self.entries[problem.id] = saved["answer"]
                self.stats[problem.id] = SearchStats.from_dict(saved["stats"])
                self.elapsed_before = max(self.elapsed_before, saved.get("run_elapsed", 0.0))
            else:
                todo.append(problem)
        self.resumed = len(self.entries)
        self.start(todo)
        if self.progress and self.resumed:
            self.progress(f"{self.run_dir}: {self.resumed} of {len(self.problems)} problems taken from earlier checkpoints")
        return todo

    def _checkpoint(self, problem: Problem) -> dict[str, Any] | None:
        try:
            saved = json.loads((self.trees / f"q{problem.id}.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if saved.get("fingerprint") != self.fingerprint or saved.get("answer", {}).get("question") != problem.question:
            return None
        return saved

    def start(self, todo: Sequence[Problem]) -> None:
        """Work is about to start: final files of an earlier run no longer describe this one."""
        if todo:
            for name in (self.answers_name, "stats.log", "run.json"):
                (self.run_dir / name).unlink(missing_ok=True)

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
        if self.progress:
            self.progress(f"{self.run_dir}: {len(self.entries)}/{len(self.problems)} problems done ({self.elapsed():.1f}s)")

    def finish(self, extra: dict[str, Any] | None = None) -> RunSummary:
        stats = SearchStats()
        for problem in self.problems:
            stats.add(self.stats[problem.id])
        stats.time = self.elapsed()  # the run's wall time (over every invocation), not the sum over problems
        answers = [self.entries[p.id] for p in self.problems]
        write_json(self.run_dir / self.answers_name, answers)
        write_atomic(self.run_dir / "stats.log", stats.stats_log())
        installed = versions()
        write_json(self.run_dir / "run.json", {
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
        })
        return RunSummary(run_dir=self.run_dir, config=self.config, stats=stats, answers=answers, resumed=self.resumed)


async def run_problems(
    problems: Sequence[Problem],
    config: SearchConfig,
    backends: Backends,
    run_dir: str | Path,
    *,
    answers_name: str = "answers.json",
    resume: bool = True,
    progress: Callable[[str], None] | None = None,
) -> RunSummary:
    """Search every problem (``num_threads`` at once) and write the run directory."""
    writer = RunWriter(run_dir, config, backends.description, problems, answers_name=answers_name, progress=progress)
    todo = writer.resume(enabled=resume)
    gate = asyncio.Semaphore(config.num_threads)

    async def one(problem: Problem) -> None:
        async with gate:
            result = await search(
                problem.question, config, policy=backends.policy, reward=backends.reward,
                embedder=backends.embedder, problem_id=problem.id,
            )
        writer.record(problem, result)

    tasks = [asyncio.create_task(one(p)) for p in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return writer.finish()


def sweep_dirs(output_dir: Path, widths: Sequence[int]) -> list[Path]:
    """Where each width's run goes: the output directory itself for one width,
    ``width_{W}/`` below it for a sweep."""
    if len(widths) == 1:
        return [output_dir]
    return [output_dir / f"width_{w}" for w in widths]
