"""The distributed runner: the same run as :func:`ets.runner.run_problems`, spread over Ray.

The driver (the process that calls :func:`run_problems_ray`) owns the run
directory: it reads the checkpoints, writes each finished problem's tree file
the moment its result arrives and writes answers.json / stats.log / run.json at
the end, all through :class:`~ets.runner.RunWriter`, so a distributed run
directory is the same as a local one (and either runner resumes the other's).

Workers are Ray actors (async actors: one event loop each). Each builds its
policy, reward and embedder once, from the plain-data
:class:`~ets.backends.factory.BackendSpec` (HTTP backends check their servers
from the worker's node then, before any problem), and searches
``config.num_threads`` problems at once. The driver feeds problems dynamically: a worker gets the next
problem when one of its own finishes (problems differ a lot in length, a static
split would leave workers idle at the end).

HTTP backends: every worker gets the whole host list, in the same order. The
:class:`~ets.backends.http.transport.HostPool` already spreads by affinity (a
problem's question picks its server, so a tree stays in one server's prefix
cache, whichever worker searches it) and moves to the least busy server when
its preferred one is overloaded or down. Rotating the list per worker would
only change which server a question hashes to, and would make the backend
description, part of each checkpoint's fingerprint, differ between workers.
(A URL on 127.0.0.1 means each worker's own node: one server per node on the
same port keeps every worker on its local server.)

Errors: a :class:`~ets.search.SearchError` or
:class:`~ets.backends.base.BackendError` in a worker comes back to the driver
as data and is raised there as the same type, its message naming the problem
and the worker (index, node IP and host name), after every problem finished by
then has been recorded; the other searches in flight are cancelled and the
actors are killed. A worker that dies (a lost node, a crashed process) has its
problems given to the others; a problem that kills two workers, or losing
every worker, ends the run with :class:`WorkerError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ets.backends.base import BackendError, Backends
from ets.backends.factory import BackendSpec, build_backends
from ets.config import SearchConfig
from ets.datasets import Problem
from ets.progress import Progress, as_progress
from ets.runner import RunSummary, RunWriter, protocols_of
from ets.search import SearchError, search

INSTALL_HINT = "pip install 'ets[ray]'"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray takes 127.0.0.1 as the node address
MAX_ATTEMPTS = 2  # a problem whose worker died is tried once more on another worker


class RayNotInstalled(ImportError):
    """``ray`` is not installed; the message says how to install it."""


@dataclass
class WorkerError(BackendError):
    """A Ray worker could not start, or died, and the run cannot go on."""


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalled(
            f"the distributed runner needs Ray, which is not installed: {INSTALL_HINT} "
            f"(or pip install ray) on the driver and on every node of the cluster"
        ) from exc
    return ray


# ---------------------------------------------------------------------- worker side


def describe_node() -> str:
    try:
        import ray.util

        ip = ray.util.get_node_ip_address()
    except Exception:  # not inside Ray (a unit test calling the worker directly)
        ip = "?"
    return f"{ip} ({socket.gethostname()})"


def failure(exc: BaseException) -> dict[str, Any]:
    """A worker's SearchError / BackendError as plain data (exceptions with extra
    fields do not always survive pickling, and a RayTaskError buries the message)."""
    if isinstance(exc, BackendError):
        return {"kind": "backend", "message": exc.message, "where": exc.where, "details": exc.details}
    return {"kind": "search", "message": str(exc)}


class SearchWorker:
    """One worker: its own backends, built once, and ``num_threads`` searches at once.

    Every method is ``async``, so Ray runs it as an async actor: the searches of
    a worker share one event loop, as in the local runner."""

    def __init__(self, index: int, spec: BackendSpec, config: SearchConfig,
                 backend_factory: Callable[[BackendSpec, SearchConfig], Backends] | None = None) -> None:
        self.index = index
        self.spec = spec
        self.config = config
        self.backend_factory = backend_factory or build_backends
        self.backends: Backends | None = None
        self.node = describe_node()
        self.gate: asyncio.Semaphore | None = None

    async def setup(self) -> dict[str, Any]:
        """Build the backends (once); return their description and protocols, or the failure, and the node."""
        if self.backends is None:
            backends = None
            try:
                backends = self.backend_factory(self.spec, self.config)
                # HTTP backends check their servers (reachable from this node? the right model?) before any problem
                await backends.start()
            except (BackendError, SearchError) as exc:
                if backends is not None:
                    await backends.aclose()  # the connections its server checks opened
                return {"node": self.node, "error": failure(exc)}
            self.backends = backends
        return {"node": self.node, "description": self.backends.description,
                "protocols": protocols_of(self.backends)}

    async def search(self, problem: Problem) -> dict[str, Any]:
        if self.gate is None:  # made in the actor's own event loop
            self.gate = asyncio.Semaphore(self.config.num_threads)
        assert self.backends is not None, "setup() first"
        b = self.backends
        async with self.gate:
            try:
                result = await search(problem.question, self.config, policy=b.policy, reward=b.reward,
                                      embedder=b.embedder, problem_id=problem.id)
            except (BackendError, SearchError) as exc:
                return {"error": failure(exc)}
        return {"result": result}

    async def close(self) -> None:
        """Close the HTTP connections of this worker's loop (no-op for other backends)."""
        if self.backends is not None:
            await self.backends.aclose()


# ---------------------------------------------------------------------- driver side


@dataclass
class _Worker:
    index: int
    handle: Any
    node: str = "?"
    inflight: int = 0
    alive: bool = True

    @property
    def name(self) -> str:
        return f"worker {self.index} on node {self.node}"


def raise_failure(error: dict[str, Any], worker: _Worker, what: str) -> None:
    where = f"{what}, {worker.name}"
    if error["kind"] == "backend":
        raise BackendError(error["message"], where=f"{error['where']}; {where}" if error["where"] else where,
                           details=error.get("details") or {})
    raise SearchError(f"{error['message']} ({where})")


def start_ray(ray, address: str | None) -> str:
    """Connect to the cluster at ``address``, or start a quiet local one; return where."""
    if ray.is_initialized():
        return address or "existing ray.init() session"
    if address is None:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True,
                 log_to_driver=True)
        return "local"
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    return address


def run_problems_ray(
    problems: Sequence[Problem],
    config: SearchConfig,
    spec: BackendSpec,
    run_dir: str | Path,
    *,
    address: str | None = None,
    num_workers: int | None = None,
    answers_name: str = "answers.json",
    resume: bool = True,
    progress: Progress | Callable[[str], None] | None = None,
    backend_factory: Callable[[BackendSpec, SearchConfig], Backends] | None = None,
) -> RunSummary:
    """Search every problem on Ray workers and write the run directory, as
    :func:`ets.runner.run_problems` does in one process (``progress`` as there).

    ``address``: None starts a local Ray cluster (unless ``ray.init`` was already
    called in this process: then its session is used); ``"auto"`` or
    ``"ray://host:10001"`` joins an existing one. Ray stays initialised after the
    call (so a width sweep starts it once); it shuts down when the process ends.
    ``num_workers``: Ray actors; default the cluster's CPU count, never more than
    there are problems. Each searches ``config.num_threads`` problems at once.
    ``backend_factory(spec, config) -> Backends``: how workers build their
    backends (default :func:`ets.backends.factory.build_backends`); it is
    pickled to the workers, so a test or a library user can plug in others.
    """
    if num_workers is not None and num_workers < 1:  # before Ray starts: nothing to start it for
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if address is None and "ray" not in sys.modules:
        # a local cluster is for this machine only: Ray's servers bind 127.0.0.1, not every interface
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    ray = import_ray()
    started, started_at = time.perf_counter(), dt.datetime.now(dt.timezone.utc)
    problems = list(problems)
    progress = as_progress(progress)
    where = start_ray(ray, address)

    workers = _spawn_workers(ray, num_workers, len(problems), spec, config, backend_factory)
    pending: dict[Any, tuple[_Worker, Problem]] = {}
    try:
        started_worker = _setup(ray, workers, progress.message)
        writer = RunWriter(run_dir, config, started_worker["description"], problems, answers_name=answers_name,
                           progress=progress)
        writer.started, writer.started_at = started, started_at  # the run's wall time includes Ray's start
        todo = writer.resume(enabled=resume)
        used = max(1, min(len(workers), len(todo)))
        _kill(ray, workers[used:])  # a resumed run may need fewer workers
        progress.message(f"ray ({where}): {used} workers on {len({w.node for w in workers[:used]})} node(s), "
                         f"{config.num_threads} problems at once each")
        _feed(ray, workers, todo, writer, pending, config.num_threads)
    finally:
        for ref in list(pending):
            ray.cancel(ref)
        _kill(ray, workers)
        progress.close()  # a failed or interrupted run's bar too: the error line goes below it
    # the APIs are found while the backends start (their server checks): worker 0's name them for the run
    return writer.finish(extra={"protocols": started_worker.get("protocols", {}),
                                "distributed": {"ray_address": where, "workers": used,
                                                "nodes": sorted({w.node for w in workers[:used]})}})


def _spawn_workers(ray, num_workers: int | None, num_problems: int, spec: BackendSpec, config: SearchConfig,
                   backend_factory: Callable[[BackendSpec, SearchConfig], Backends] | None) -> list[_Worker]:
    """The worker actors: ``num_workers`` (default: the cluster's CPUs), never more than there are problems."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    wanted = num_workers if num_workers is not None else max(1, int(cpus))
    count = max(1, min(wanted, num_problems))
    # one CPU each when they fit; otherwise share, so asking for more workers than CPUs never hangs
    actor_cpus = min(1.0, cpus / count) if cpus > 0 else 0
    remote_cls = ray.remote(SearchWorker)
    return [
        _Worker(i, remote_cls.options(num_cpus=actor_cpus, scheduling_strategy="SPREAD",
                                      max_concurrency=max(8, 2 * config.num_threads))
                .remote(i, spec, config, backend_factory))
        for i in range(count)
    ]


def _setup(ray, workers: list[_Worker], log: Callable[[str], None], every: float = 60.0) -> dict[str, Any]:
    """Every worker builds its backends; return worker 0's setup answer: its description (the fingerprint's)
    and protocols.

    Loading models can take minutes, so there is no deadline; a line every
    ``every`` seconds says how many workers are still waiting (an actor the
    cluster has no room for waits until it has)."""
    refs = {w.handle.setup.remote(): w for w in workers}
    outcomes: dict[int, dict] = {}
    waiting = list(refs)
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1, timeout=every)
        for ref in ready:
            w = refs[ref]
            try:
                outcomes[w.index] = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise WorkerError(f"could not start: {exc}", where=f"worker {w.index}") from exc
            w.node = outcomes[w.index]["node"]
            if "error" in outcomes[w.index]:  # no need to wait for the others
                raise_failure(outcomes[w.index]["error"], w, "building the backends")
        if waiting and not ready:
            log(f"ray: {len(outcomes)} of {len(workers)} workers ready; waiting for the others "
                f"(building their backends, or no free CPU for them in the cluster)")
    return outcomes[0]


def _kill(ray, workers: list[_Worker]) -> None:
    """Close the workers' connections (a few seconds at most), then end their processes."""
    live = [w for w in workers if w.alive]
    for w in live:
        w.alive = False
    if not live:
        return
    try:
        ray.wait([w.handle.close.remote() for w in live], num_returns=len(live), timeout=5)
    except Exception:  # dead already: killing them is what matters
        pass
    for w in live:
        try:
            ray.kill(w.handle)
        except Exception:
            pass


def _feed(ray, workers: list[_Worker], todo: list[Problem], writer: RunWriter,
          pending: dict[Any, tuple[_Worker, Problem]], per_worker: int) -> None:
    queue: deque[Problem] = deque(todo)
    attempts: dict[int, int] = {}

    def fill() -> None:
        for w in workers:
            while w.alive and queue and w.inflight < per_worker:
                problem = queue.popleft()
                attempts[problem.id] = attempts.get(problem.id, 0) + 1
                pending[w.handle.search.remote(problem)] = (w, problem)
                w.inflight += 1

    fill()
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        w, problem = pending.pop(ref)
        w.inflight -= 1
        try:
            out = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # the worker died (node lost, process crashed)
            w.alive = False
            if attempts[problem.id] >= MAX_ATTEMPTS:
                raise WorkerError(f"problem {problem.id!r}: {attempts[problem.id]} workers died searching it; "
                                  f"last: {exc}", where=w.name) from exc
            if not any(x.alive for x in workers):
                raise WorkerError(f"every worker died; last: {exc}", where=w.name) from exc
            writer.progress.message(f"{w.name} died; its problems go to the other workers")
            queue.appendleft(problem)
            fill()
            continue
        if "error" in out:
            _drain_finished(ray, pending, writer)
            raise_failure(out["error"], w, f"problem {problem.id!r}")
        writer.record(problem, out["result"])
        fill()


def _drain_finished(ray, pending: dict[Any, tuple[_Worker, Problem]], writer: RunWriter) -> None:
    """Record what already finished before raising (the rest is cancelled)."""
    if not pending:
        return
    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
    for ref in ready:
        w, problem = pending.pop(ref)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError:
            continue
        if "result" in out:
            writer.record(problem, out["result"])
