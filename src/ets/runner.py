"""Datasets in, files out: many problems at once, per-problem checkpoints, atomic writes.

A run directory holds::

    answers.json   the reference's schema (SPEC section 4), each trajectory with its ``steps``
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


def fingerprint(config: SearchConfig, backends: Backends) -> dict[str, Any]:
    settings = {k: v for k, v in config.to_dict().items() if k not in NON_RESULT_KEYS}
    return {"config": settings, "backends": backends.description}


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


def _load_checkpoint(path: Path, problem: Problem, expected: dict[str, Any]) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if saved.get("fingerprint") != expected or saved.get("answer", {}).get("question") != problem.question:
        return None
    return saved


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
    run_dir = Path(run_dir)
    trees = run_dir / "trees"
    trees.mkdir(parents=True, exist_ok=True)
    expected = fingerprint(config, backends)
    started_at = dt.datetime.now(dt.timezone.utc)
    started = time.perf_counter()

    entries: dict[int, dict] = {}
    per_problem_stats: dict[int, SearchStats] = {}
    todo = []
    for problem in problems:
        saved = _load_checkpoint(trees / f"q{problem.id}.json", problem, expected) if resume else None
        if saved:
            entries[problem.id] = saved["answer"]
            per_problem_stats[problem.id] = SearchStats.from_dict(saved["stats"])
        else:
            todo.append(problem)
    resumed = len(entries)
    if progress and resumed:
        progress(f"{run_dir}: {resumed} of {len(problems)} problems taken from earlier checkpoints")

    gate = asyncio.Semaphore(config.num_threads)

    async def one(problem: Problem) -> None:
        async with gate:
            result = await search(
                problem.question, config, policy=backends.policy, reward=backends.reward,
                embedder=backends.embedder, problem_id=problem.id,
            )
        entry = answer_entry(problem, result)
        write_json(trees / f"q{problem.id}.json", {
            "fingerprint": expected,
            "answer": entry,
            "stats": result.stats.to_dict(),
            "nodes": result.tree.to_dicts(),
        })
        entries[problem.id] = entry
        per_problem_stats[problem.id] = result.stats
        if progress:
            progress(f"{run_dir}: {len(entries)}/{len(problems)} problems done ({time.perf_counter() - started:.1f}s)")

    tasks = [asyncio.create_task(one(p)) for p in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

    stats = SearchStats()
    for problem in problems:
        stats.add(per_problem_stats[problem.id])
    stats.time = time.perf_counter() - started  # the run's wall time, not the sum over problems
    answers = [entries[p.id] for p in problems]

    write_json(run_dir / answers_name, answers)
    write_atomic(run_dir / "stats.log", stats.stats_log())
    write_json(run_dir / "run.json", {
        "ets_version": versions().get("ets"),
        "config": config.to_dict(),
        "stats": stats.to_dict(),
        "num_problems": len(problems),
        "resumed_problems": resumed,
        "backends": backends.description,
        "versions": versions(),
        "command": sys.argv,
        "started_at": started_at.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    })
    return RunSummary(run_dir=run_dir, config=config, stats=stats, answers=answers, resumed=resumed)


def sweep_dirs(output_dir: Path, widths: Sequence[int]) -> list[Path]:
    """Where each width's run goes: the output directory itself for one width,
    ``width_{W}/`` below it for a sweep."""
    if len(widths) == 1:
        return [output_dir]
    return [output_dir / f"width_{w}" for w in widths]
