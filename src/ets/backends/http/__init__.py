"""Policy and PRM on real inference servers, over HTTP.

Factories (what ``ets run --policy_host / --reward_host / --reward_api`` call)::

    make_policy(hosts, *, model=None, max_concurrency=64, timeout=120.0,
                retries=3, backoff=0.5, use_n=True) -> OpenAICompletionsPolicy
    make_reward(hosts, *, api=None, reward_model_type="llemma", model=None,
                max_concurrency=64, timeout=120.0, retries=3, backoff=0.5,
                good_token_id=None, bad_token_id=None, pooling_task=None,
                prompt_format=None) -> HTTPReward

``hosts`` is one URL, a comma-separated string, or a list (``host:port`` is
read as ``http://host:port``); requests spread over them (see
:mod:`ets.backends.http.transport`). Both objects implement the protocols of
:mod:`ets.backends.base` and have ``async start()`` (alias ``check()``): it
fails fast with a :class:`~ets.backends.base.BackendError` naming the URL when
a server is unreachable or serves another model than ``model``; ``generate`` /
``score`` call it on first use anyway. ``async aclose()`` closes connections;
``await aclose_all()`` closes those of every HTTP backend, before the event
loop ends (else Python warns about unclosed sockets).

Reward APIs (``api``): ``"ets"`` (``ets serve reward``), ``"sglang"``
(token-logit PRMs on SGLang's ``/generate``; also spelled ``sglang-generate``),
``"vllm"`` (classification PRMs on vLLM's ``/pooling``; also ``vllm-pooling``). With ``api=None`` the server is asked first: our
server says who it is on ``GET /info``; otherwise ``reward_model_type``
decides (``mistral``, ``llemma``, ``llama`` -> sglang; ``qwen`` -> vllm).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Sequence

from ets.backends.base import BackendError, Context
from ets.backends.http.policy import OpenAICompletionsPolicy, parse_completion
from ets.backends.http.reward import (
    PRM_SPECS,
    REWARD_APIS,
    EtsReward,
    PRMSpec,
    SGLangGenerateReward,
    VLLMPoolingReward,
    math_shepherd_text,
    parse_pooling_score,
    parse_sglang_score,
)
from ets.backends.http.transport import HostPool, aclose_all, normalize_url, split_hosts

__all__ = [
    "EtsReward", "HTTPReward", "aclose_all", "HostPool", "OpenAICompletionsPolicy", "PRM_SPECS", "PRMSpec", "REWARD_APIS",
    "SGLangGenerateReward", "VLLMPoolingReward", "make_policy", "make_reward", "normalize_url",
    "parse_completion", "parse_pooling_score", "parse_sglang_score", "split_hosts",
]


# other spellings of the reward APIs
API_ALIASES = {"vllm-pooling": "vllm", "pooling": "vllm", "sglang-generate": "sglang", "generate": "sglang",
               "ets-reward": "ets"}


def make_policy(
    hosts: str | list[str],
    *,
    model: str | None = None,
    max_concurrency: int = 64,
    timeout: float = 120.0,
    retries: int = 3,
    backoff: float = 0.5,
    use_n: bool = True,
    **pool_options: Any,
) -> OpenAICompletionsPolicy:
    """A policy on the ``/v1/completions`` API of the server(s) at ``hosts``."""
    pool = HostPool(hosts, what="policy", timeout=timeout, max_concurrency=max_concurrency,
                    retries=retries, backoff=backoff, **pool_options)
    return OpenAICompletionsPolicy(pool, model=model, use_n=use_n)


class HTTPReward:
    """The reward adapter ``make_reward`` picked, or picks at ``start()`` when ``api`` is None."""

    def __init__(self, pool: HostPool, *, api: str | None, reward_model_type: str, model: str | None,
                 good_token_id: int | None, bad_token_id: int | None, pooling_task: str | None,
                 prompt_format: str | None = None) -> None:
        api = API_ALIASES.get(api, api) if api is not None else None
        if api is not None and api not in REWARD_APIS:
            raise ValueError(f"reward api {api!r} is not one of {', '.join(REWARD_APIS)}")
        self.pool = pool
        self.api = api
        self.reward_model_type = reward_model_type
        self.model = model
        self._overrides = (good_token_id, bad_token_id)
        self.pooling_task = pooling_task
        self.prompt_format = prompt_format
        self.adapter: EtsReward | SGLangGenerateReward | VLLMPoolingReward | None = None
        self._lock: asyncio.Lock | None = None
        if api is not None:
            self.adapter = self._build(api)

    @property
    def hosts(self) -> list[str]:
        return self.pool.hosts

    def _spec(self) -> PRMSpec:
        spec = PRM_SPECS.get(self.reward_model_type)
        good, bad = self._overrides
        if spec is None:
            if good is None:
                raise BackendError(
                    f"reward_model_type {self.reward_model_type!r} has no known PRM adapter; use one of "
                    f"{', '.join(sorted(PRM_SPECS))}, or --reward_api ets for `ets serve reward`",
                    where=self.pool.hosts[0])
            spec = PRM_SPECS["mistral"]
        if good is not None:
            spec = replace(spec, good_id=good, bad_id=bad)
        if spec.render is math_shepherd_text and self.prompt_format:
            from ets.formats import FORMATS

            fmt = FORMATS.get(self.prompt_format)
            if fmt is not None and fmt.step_tag and fmt.step_tag != "ки":
                tag = fmt.step_tag
                spec = replace(spec, render=lambda c, _t=tag: math_shepherd_text(c, _t))
        return spec

    def _build(self, api: str):
        if api == "ets":
            return EtsReward(self.pool, model=self.model)
        spec = self._spec()
        if api == "sglang":
            if spec.good_id is None:
                raise BackendError(f"reward_model_type {self.reward_model_type!r} is a classification PRM; "
                                   "serve it with vLLM (--reward_api vllm) or give its token ids",
                                   where=self.pool.hosts[0])
            return SGLangGenerateReward(self.pool, spec=spec, model=self.model)
        return VLLMPoolingReward(self.pool, spec=spec, model=self.model, task=self.pooling_task)

    async def _detect(self) -> str:
        host = self.pool.hosts[0]
        try:
            _, info = await self.pool.get("/info", host=host, retries=1, timeout=self.pool.start_timeout)
        except BackendError as exc:
            if exc.details.get("status") is None:  # nothing answered at all
                raise BackendError(
                    f"cannot reach the reward server ({exc.message}). Start one, e.g. "
                    f"`ets serve reward --port PORT`, or fix --reward_host", where=host) from None
            info = None
        if isinstance(info, dict) and info.get("server") == "ets-reward":
            return "ets"
        spec = PRM_SPECS.get(self.reward_model_type)
        if spec is None:
            raise BackendError(
                f"cannot tell which API the reward server speaks: it is not `ets serve reward`, and "
                f"reward_model_type {self.reward_model_type!r} has no default; pass --reward_api "
                f"{'|'.join(REWARD_APIS)}", where=host)
        return spec.api

    async def start(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.adapter is None:
                self.api = await self._detect()
                self.adapter = self._build(self.api)
            await self.adapter.check()

    check = start

    async def score(self, contexts: Sequence[Context]) -> list[float | None]:
        if self.adapter is None or not self.adapter._started:
            await self.start()
        assert self.adapter is not None
        return await self.adapter.score(contexts)

    async def aclose(self) -> None:
        await self.pool.aclose()


def make_reward(
    hosts: str | list[str],
    *,
    api: str | None = None,
    reward_model_type: str = "llemma",
    model: str | None = None,
    max_concurrency: int = 64,
    timeout: float = 120.0,
    retries: int = 3,
    backoff: float = 0.5,
    good_token_id: int | None = None,
    bad_token_id: int | None = None,
    pooling_task: str | None = None,
    prompt_format: str | None = None,
    **pool_options: Any,
) -> HTTPReward:
    """A PRM on the server(s) at ``hosts``, through the adapter ``api`` picks (see the module docstring)."""
    pool = HostPool(hosts, what="reward", timeout=timeout, max_concurrency=max_concurrency,
                    retries=retries, backoff=backoff, **pool_options)
    return HTTPReward(pool, api=api, reward_model_type=reward_model_type, model=model,
                      good_token_id=good_token_id, bad_token_id=bad_token_id, pooling_task=pooling_task,
                      prompt_format=prompt_format)
