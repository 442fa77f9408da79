"""The factories ``ets run`` calls for its model servers: :func:`make_policy`, :func:`make_reward`,
and :class:`HTTPReward`, the reward that picks its adapter (see :mod:`ets.backends.http`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from ets.backends.base import BackendError, Context, Reward
from ets.backends.http.backend import HTTPBackend
from ets.backends.http.policy import OpenAICompletionsPolicy
from ets.backends.http.reward import (
    PRM_SPECS,
    REWARD_APIS,
    SERVE_REWARD,
    EtsReward,
    PRMSpec,
    SGLangGenerateReward,
    VLLMPoolingReward,
)
from ets.backends.http.transport import HostPool
from ets.formats import FORMATS


PROTOCOLS = {"ets": "ets /score", "sglang": "sglang /generate", "vllm": "vllm /pooling"}  # reward api -> its protocol
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


class HTTPReward(HTTPBackend, Reward):
    """The reward adapter ``make_reward`` picked, or picks at ``start()`` when ``api`` is None."""

    what = "reward"

    def __init__(self, pool: HostPool, *, api: str | None, reward_model_type: str, model: str | None,
                 good_token_id: int | None, bad_token_id: int | None, pooling_task: str | None,
                 prompt_format: str | None = None) -> None:
        api = API_ALIASES.get(api, api) if api is not None else None
        if api is not None and api not in REWARD_APIS:
            raise ValueError(f"reward api {api!r} is not one of {', '.join(REWARD_APIS)}")
        super().__init__(pool)
        self.api = api
        self.reward_model_type = reward_model_type
        self.model = model
        self._overrides = (good_token_id, bad_token_id)
        self.pooling_task = pooling_task
        self.prompt_format = prompt_format
        self.adapter: EtsReward | SGLangGenerateReward | VLLMPoolingReward | None = None
        if api is not None:
            self.adapter = self._build(api)

    @property
    def protocol(self) -> str | None:
        """The API the PRM was asked through (run.json's ``protocols``); None before it is known."""
        return PROTOCOLS.get(self.api) if self.api else None

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
        # the policy's format: the step tag a step-tag PRM reads at, the delimiters a step's content drops
        return replace(spec, format=FORMATS.get(self.prompt_format) if self.prompt_format else None)

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
            info = await self.start_check("/info", host=host, serve=SERVE_REWARD)
        except BackendError as exc:
            if exc.details.get("status") is None:  # nothing answered at all
                raise
            info = None  # a server, not ours: no /info
        if isinstance(info, dict) and info.get("server") == "ets-reward":
            return "ets"
        family = await self._server_family(host)
        if family is not None:  # a vLLM server scores through /pooling, whatever the PRM's family
            return family
        spec = PRM_SPECS.get(self.reward_model_type)
        if spec is None:
            raise BackendError(
                f"cannot tell which API the reward server speaks: it is not `ets serve reward`, and "
                f"reward_model_type {self.reward_model_type!r} has no default; pass --reward_api "
                f"{'|'.join(REWARD_APIS)}", where=host)
        return spec.api

    async def _server_family(self, host: str) -> str | None:
        """``vllm`` or ``sglang`` when the server's ``GET /v1/models`` says it is one (``owned_by``), else None."""
        try:
            _, body = await self.pool.get("/v1/models", host=host, retries=1, timeout=self.pool.start_timeout)
        except BackendError:
            return None
        models = body.get("data") if isinstance(body, dict) else None
        owners = {str(m.get("owned_by", "")).lower() for m in models or [] if isinstance(m, dict)}
        return next((api for api in ("vllm", "sglang") if api in owners), None)

    async def check_servers(self) -> None:
        if self.adapter is None:
            self.api = await self._detect()
            self.adapter = self._build(self.api)
        await self.adapter.start()

    async def score(self, contexts: Sequence[Context]) -> list[float | None]:
        await self.start()
        assert self.adapter is not None
        return await self.adapter.score(contexts)


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
