"""One or several model servers behind a single async JSON client.

:class:`HostPool` is what every HTTP backend talks through. It

* bounds the requests in flight (one semaphore for the whole pool),
* spreads requests over the hosts: a request with an ``affinity`` key (the
  question of the problem, say) goes to the same host as long as that host is
  not busier than the least busy one by more than ``imbalance`` requests, so a
  problem's tree stays in one server's prefix cache; otherwise to the least
  busy host,
* retries connection errors, HTTP 5xx and 429 with exponential backoff (and
  jitter), moving to another host when there is one, and marks a failing host
  down for a short while,
* gives a server ``timeout`` seconds (120 by default; ``ets run
  --request_timeout``) to answer; a request that times out is tried on another
  host, never again on the same one (a server that hangs once hangs again), so
  with one host it fails after ``timeout`` seconds. Start checks
  (``GET /v1/models`` and the like) get ``start_timeout``: at most 10 seconds,
* turns what is left into a :class:`~ets.backends.base.BackendError` naming
  the URL, after a bounded number of attempts: a dead server never hangs a run.

The ``httpx.AsyncClient`` is made per event loop, so a pool built outside a
loop (by the CLI, say) works inside ``asyncio.run`` and in successive loops.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ets.backends.base import BackendError

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT = 120.0  # seconds a server has to answer a request
START_TIMEOUT = 10.0  # seconds a server has to answer a start check (at most REQUEST_TIMEOUT)


def normalize_url(url: str) -> str:
    """``host:port`` or ``http://host:port/`` -> ``http://host:port``; anything
    that is not an http(s) URL with a host (and a port from 0 to 65535) is refused."""
    text = url.strip()
    if not text:
        raise ValueError("an empty server URL; expected http://HOST:PORT")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name; expected http://HOST:PORT")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 0 to 65535") from None
    return text.rstrip("/")


def split_hosts(hosts: str | list[str] | tuple[str, ...]) -> list[str]:
    """Accept one URL, a comma-separated list, or a list of either."""
    if isinstance(hosts, str):
        hosts = [hosts]
    out: list[str] = []
    for item in hosts:
        out.extend(normalize_url(part) for part in str(item).split(",") if part.strip())
    if not out:
        raise ValueError("no server URL given; expected http://HOST:PORT")
    return list(dict.fromkeys(out))  # unique, in order


@dataclass
class PoolStats:
    """Counters a test (or a log line) can read."""

    requests: int = 0  # logical requests made through the pool
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0  # attempts after the first, over all requests


_POOLS: "weakref.WeakSet[HostPool]" = weakref.WeakSet()


async def aclose_all() -> None:
    """Close the connections every pool holds in the running loop (call it before the loop ends)."""
    for pool in list(_POOLS):
        await pool.aclose()


class HostPool:
    """Async JSON requests to one or several equivalent servers."""

    def __init__(
        self,
        hosts: str | list[str],
        *,
        what: str = "model",
        timeout: float = REQUEST_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
        connect_timeout: float = 5.0,
        max_concurrency: int = 64,
        retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        down_for: float = 5.0,
        imbalance: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.hosts = split_hosts(hosts)
        self.what = what
        self.timeout = float(timeout)
        self.start_timeout = float(min(start_timeout, timeout))
        self.connect_timeout = float(min(connect_timeout, timeout))
        self.max_concurrency = int(max_concurrency)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.down_for = float(down_for)
        self.imbalance = int(imbalance)
        self.stats = PoolStats()
        self._transport = transport  # tests inject httpx.MockTransport
        self._inflight = {h: 0 for h in self.hosts}
        self._down_until = {h: 0.0 for h in self.hosts}
        self._rr = 0
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._sems: dict[int, asyncio.Semaphore] = {}
        _POOLS.add(self)

    # ------------------------------------------------------------------ plumbing
    def _loop_key(self) -> int:
        return id(asyncio.get_running_loop())

    def client(self) -> httpx.AsyncClient:
        key = self._loop_key()
        client = self._clients.get(key)
        if client is None or client.is_closed:
            # drop clients of loops that are gone; they cannot be closed from here
            self._clients = {k: c for k, c in self._clients.items() if k == key}
            limits = httpx.Limits(max_connections=self.max_concurrency + 8,
                                  max_keepalive_connections=self.max_concurrency + 8)
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=limits,
                transport=self._transport,
                trust_env=False,  # a model server on loopback must not go through a proxy
            )
            self._clients[key] = client
        return client

    def _semaphore(self) -> asyncio.Semaphore:
        key = self._loop_key()
        sem = self._sems.get(key)
        if sem is None:
            self._sems = {key: asyncio.Semaphore(self.max_concurrency)}
            sem = self._sems[key]
        return sem

    async def aclose(self) -> None:
        try:
            key = self._loop_key()
        except RuntimeError:
            return
        client = self._clients.pop(key, None)
        if client is not None:
            await client.aclose()

    def pick(self, affinity: str | None = None, exclude: frozenset[str] = frozenset()) -> str:
        """The host for the next request (see the module docstring)."""
        now = time.monotonic()
        live = [h for h in self.hosts if h not in exclude and self._down_until[h] <= now]
        if not live:
            live = [h for h in self.hosts if h not in exclude] or list(self.hosts)
        if len(live) == 1:
            return live[0]
        least = min(self._inflight[h] for h in live)
        if affinity is not None:
            preferred = self.hosts[zlib.crc32(affinity.encode("utf-8")) % len(self.hosts)]
            if preferred in live and self._inflight[preferred] <= least + self.imbalance:
                return preferred
        idle = [h for h in live if self._inflight[h] == least]
        self._rr += 1
        return idle[self._rr % len(idle)]

    def _delay(self, attempt: int) -> float:
        base = min(self.backoff_max, self.backoff * (2 ** attempt))
        return base * (0.5 + random.random() / 2)

    # ------------------------------------------------------------------ requests
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        affinity: str | None = None,
        host: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> tuple[str, Any]:
        """Send one JSON request; return ``(host, decoded JSON body)``.

        ``json`` may be a function of the chosen host (a body that depends on
        the server family).
        ``host`` pins the request to one server (no failover). ``timeout``: the
        seconds each server gets to answer (default: the pool's). Raises
        :class:`BackendError` naming the URL on a 4xx answer at once; after
        ``retries`` further attempts on connection errors, 5xx, 429; and when
        every host it may go to has timed out.
        """
        retries = self.retries if retries is None else retries
        timeout = self.timeout if timeout is None else float(timeout)
        limits = httpx.Timeout(timeout, connect=min(self.connect_timeout, timeout))
        self.stats.requests += 1
        tried: list[str] = []
        last_error = ""
        last_url = ""
        async with self._semaphore():
            for attempt in range(retries + 1):
                if host is not None:
                    target = host
                else:
                    # move away from hosts that failed this request, while others remain
                    done = frozenset(tried)
                    target = self.pick(affinity, exclude=done if len(done) < len(self.hosts) else frozenset())
                last_url = target + path
                tried.append(target)
                self.stats.attempts += 1
                if attempt:
                    self.stats.retries += 1
                try:
                    return target, await self._attempt(method, path, target, json, limits)
                except _Retryable as failure:
                    last_error, timed_out = failure.error, failure.timed_out
                if timed_out and (host is not None or len(set(tried)) >= len(self.hosts)):
                    break  # every host this request may use has had its chance
                if attempt < retries:
                    await asyncio.sleep(self._delay(attempt))
        hosts = ", ".join(dict.fromkeys(tried))
        raise BackendError(
            f"{self.what} server failed {method} {path} after {len(tried)} attempt(s); last error: {last_error}"
            + (f" (tried {hosts})" if len(set(tried)) > 1 else ""),
            where=last_url,
            details={"attempts": len(tried), "hosts": list(dict.fromkeys(tried)), "timed_out": timed_out},
        )

    async def _attempt(self, method: str, path: str, target: str, json: Any, limits: httpx.Timeout) -> Any:
        """One attempt of a request on ``target``: the decoded answer. Raises :class:`_Retryable` when
        another attempt may succeed (no connection, a timeout, 5xx, 429), :class:`BackendError` when none will."""
        url = target + path
        self._inflight[target] += 1
        try:
            payload = json(target) if callable(json) else json
            response = await self.client().request(method, url, json=payload, timeout=limits)
        except httpx.TimeoutException as exc:
            self._down_until[target] = time.monotonic() + self.down_for
            raise _Retryable(f"no answer within {limits.read:g}s ({type(exc).__name__})", timed_out=True) from None
        except httpx.TransportError as exc:
            self._down_until[target] = time.monotonic() + self.down_for
            raise _Retryable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        finally:
            self._inflight[target] -= 1
        if response.status_code < 400:
            try:
                body = response.json()
            except ValueError:
                raise BackendError(
                    f"{self.what} server answered {method} {path} with something that is not JSON: "
                    f"{response.text[:200]!r}", where=url) from None
            self._down_until[target] = 0.0
            return body
        if response.status_code not in RETRY_STATUS:
            raise BackendError(
                f"{self.what} server refused {method} {path}: HTTP {response.status_code}: {_error_text(response)}",
                where=url,
                details={"status": response.status_code},
            )
        raise _Retryable(f"HTTP {response.status_code}: {_error_text(response)}")

    async def post(self, path: str, json: Any, **kw: Any) -> tuple[str, Any]:
        return await self.request("POST", path, json=json, **kw)

    async def get(self, path: str, **kw: Any) -> tuple[str, Any]:
        return await self.request("GET", path, **kw)


class _Retryable(Exception):
    """An attempt failed in a way another attempt (or another host) may not."""

    def __init__(self, error: str, *, timed_out: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.timed_out = timed_out


def _error_text(response: httpx.Response) -> str:
    """The server's own error message, short."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message", body)))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    return str(body)[:300]
