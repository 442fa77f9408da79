"""The KV-cache figures a model server reports about itself, beside the ones the search counts.

vLLM's Prometheus ``GET /metrics`` (``vllm/v1/metrics/loggers.py``) has, per engine:

* ``vllm:kv_cache_usage_perc`` -- a gauge, the share of the KV-cache blocks in use (1 = all);
* ``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits`` -- counters, in prompt tokens looked up in
  the prefix cache and found there (Prometheus names a counter's sample ``..._total``).

SGLang's (``--enable-metrics``; ``python/sglang/srt/metrics/collector.py``) are the same three under other
names: ``sglang:token_usage`` (a gauge, the share of the KV-cache pool in use), and the counters
``sglang:prompt_tokens_total`` and ``sglang:cached_tokens_total`` (each finished request adds its prompt
tokens and the cached ones among them). They are read from SGLang's documented shapes: no SGLang runs here.

A :class:`ServerWatch` reads them from every vLLM or SGLang server of a run: the counters' growth while a problem is
searched (problems searched at once share a server, so their spans overlap and each counts the others'
requests too), and the highest KV-cache usage seen meanwhile, polled every ``interval`` seconds. The
figures go into the problem's :class:`~ets.stats.SearchStats` as ``server_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Iterable

import httpx

METRICS = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:prefix_cache_queries_total": "prefix_cache_queries",
    "vllm:prefix_cache_hits_total": "prefix_cache_hits",
    "sglang:token_usage": "kv_cache_usage",
    "sglang:prompt_tokens_total": "prefix_cache_queries",
    "sglang:cached_tokens_total": "prefix_cache_hits",
}


def parse_metrics(text: str) -> dict[str, float]:
    """The figures of :data:`METRICS` from a Prometheus text answer: counters summed over the samples of
    every label set (one per engine; 0 for one declared without samples yet), the usage gauge their highest."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            # a counter declared before its first sample (SGLang's appear with the first finished request): 0
            name = line.split()[2]
            key = METRICS.get(name) or METRICS.get(name + "_total")
            if key is not None:
                found.setdefault(key, 0.0)
            continue
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = METRICS.get(name)
        if key is None:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1] if "}" not in line else line.rsplit("}", 1)[1].split()[0])
        except (IndexError, ValueError):
            continue
        found[key] = max(found.get(key, 0.0), value) if key == "kv_cache_usage" else found.get(key, 0.0) + value
    return found


@dataclass
class _Span:
    start: dict[str, float]
    peak: float


class ServerWatch:
    """Reads ``/metrics`` of the servers at ``hosts`` (see the module docstring)."""

    def __init__(self, hosts: Iterable[str], *, interval: float = 0.5, timeout: float = 5.0) -> None:
        self.hosts = list(dict.fromkeys(hosts))
        self.interval = interval
        self.timeout = timeout
        self._spans: dict[Any, _Span] = {}
        self._poller: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    async def read(self) -> dict[str, float] | None:
        """The servers' figures now (counters added up, usage the highest); None when none reports them."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        answers = await asyncio.gather(*(self._client.get(h + "/metrics") for h in self.hosts),
                                       return_exceptions=True)
        total: dict[str, float] = {}
        for answer in answers:
            if isinstance(answer, BaseException) or answer.status_code != 200:
                continue
            for key, value in parse_metrics(answer.text).items():
                total[key] = max(total.get(key, 0.0), value) if key == "kv_cache_usage" else total.get(key, 0.0) + value
        return total if "prefix_cache_queries" in total else None

    async def available(self) -> bool:
        try:
            return await self.read() is not None
        except httpx.HTTPError:
            return False

    async def begin(self, key: Any) -> None:
        now = await self.read() or {}
        self._spans[key] = _Span(now, now.get("kv_cache_usage", 0.0))
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll())

    async def end(self, key: Any) -> dict[str, float]:
        """The figures of ``key``'s span, as :class:`~ets.stats.SearchStats` fields."""
        span = self._spans.pop(key)
        now = await self.read() or {}
        peak = max(span.peak, now.get("kv_cache_usage", 0.0))
        return {
            "server_prefix_cache_queries": int(now.get("prefix_cache_queries", 0) - span.start.get("prefix_cache_queries", 0)),
            "server_prefix_cache_hits": int(now.get("prefix_cache_hits", 0) - span.start.get("prefix_cache_hits", 0)),
            "server_kv_cache_usage_peak": round(peak, 6),
        }

    async def sample(self) -> None:
        """The KV-cache usage now, into the peak of every open span."""
        if not self._spans:
            return
        usage = (await self.read() or {}).get("kv_cache_usage", 0.0)
        for span in self._spans.values():
            span.peak = max(span.peak, usage)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            with contextlib.suppress(httpx.HTTPError):
                await self.sample()

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
