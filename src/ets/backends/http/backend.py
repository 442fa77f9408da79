"""What every HTTP backend shares: a :class:`~ets.backends.http.transport.HostPool`, server checks
that run once (at ``start()``, or on first use), and the start check's errors."""

from __future__ import annotations

import asyncio
from typing import Any

from ets.backends.base import BackendError
from ets.backends.http.transport import HostPool


class HTTPBackend:
    """A backend on the servers of ``pool``. ``start()`` runs :meth:`check_servers` once, under a lock;
    requests call it first, so a backend nobody started checks its servers on first use."""

    what = "model"  # "policy" or "reward": the server it is, and its --*_host option
    _started = False
    _start_lock: asyncio.Lock | None = None

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool

    @property
    def hosts(self) -> list[str]:
        return self.pool.hosts

    async def check_servers(self) -> None:
        """Fail fast, naming the URL, when a server does not answer or serves another model."""

    async def start(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self.check_servers()
                self._started = True

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def start_check(self, path: str, *, host: str, serve: str) -> Any:
        """``GET path`` on ``host`` with the start check's timeout and one retry; the decoded answer.

        A server that does not answer (or refuses) is a :class:`BackendError` saying how to start one
        (``serve``: an ``ets serve`` command line); ``details["status"]`` keeps the HTTP status it
        answered with, if any."""
        try:
            _, body = await self.pool.get(path, host=host, retries=1, timeout=self.pool.start_timeout)
        except BackendError as exc:
            raise BackendError(
                f"cannot reach the {self.what} server ({exc.message}). Start one, e.g. `{serve}`, "
                f"or fix --{self.what}_host", where=host + path, details={"status": exc.details.get("status")},
            ) from None
        return body


def served_model(configured: str, served: list[str]) -> str | None:
    """The name among ``served`` that is the ``configured`` model: the same name, else the same last path
    part in any case (``org/name`` configured, ``name`` or a path ending in it served); None when none is."""

    def short(name: str) -> str:
        return name.rstrip("/").split("/")[-1].lower()

    same = [name for name in served if name == configured]
    same = same or [name for name in served if short(name) == short(configured)]
    return same[0] if same else None
