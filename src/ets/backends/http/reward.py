"""Process reward models over HTTP: three adapters behind the Reward protocol.

``sglang`` -- token-logit PRMs (math-shepherd, Llemma's PRM, RLHFlow) on SGLang's
native ``POST /generate``. The PRM reads a judgement token after each step;
the score of the newest step is the model's next-token distribution at the end
of its input, over the "good" and "bad" tokens. Request (fields of
``GenerateReqInput``, https://docs.sglang.io/basic_usage/sampling_params.html)::

    {"text": PRM_TEXT, "sampling_params": {"max_new_tokens": 1, "temperature": 1.0},
     "return_logprob": true, "logprob_start_len": -1, "top_logprobs_num": 0,
     "token_ids_logprob": [GOOD_ID, BAD_ID]}

``logprob_start_len = -1`` asks for no prompt logprobs, so the radix cache
serves every token already seen (the parent's text) and only the new step is
computed -- what the reference's SGLang fork was modified for, with upstream
SGLang. The answer's ``meta_info.output_token_ids_logprobs[0]`` is a list of
``[logprob, token_id, text]``; score = p(good) / (p(good) + p(bad)) (with one
id: p(good)). Sampling at temperature 1 keeps the logprobs those of the raw
logits.

``vllm`` -- classification-head PRMs (Qwen2.5-Math-PRM-7B) on vLLM's
``POST /pooling``: ``{"model": M, "input": PRM_TEXT}`` with the steps joined
by ``<extra_0>``; the answer's ``data[0].data`` holds one ``[p_bad, p_good]``
row per ``<extra_0>`` (softmax applied by the server's STEP pooler); the score
of the newest step is the last row's ``p_good``.

``ets`` -- our own server (``ets serve reward``): ``POST /score`` with the
contexts as they are, ``{"contexts": [{"question", "prompt", "steps"}]}`` ->
``{"scores": [...]}``; ``GET /info`` says ``"server": "ets-reward"``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Sequence

from ets.backends.base import BackendError, Context, Reward
from ets.backends.http.backend import HTTPBackend, served_model
from ets.backends.http.transport import HostPool
from ets.backends.prm_families import FAMILY_OF_MODEL, PRMFamily
from ets.formats import PromptFormat

# ---------------------------------------------------------------------------- PRM specs


@dataclass(frozen=True)
class PRMSpec:
    """How one PRM model is asked: its family's text (:mod:`ets.backends.prm_families`), on which server API,
    and for a token-logit PRM the ids of its family's good and bad tokens in the model's vocabulary."""

    api: str  # "sglang" | "vllm"
    family: PRMFamily
    good_id: int | None = None  # sglang: the judgement token ids
    bad_id: int | None = None
    format: PromptFormat | None = None  # the policy's prompt format, when known (its step tag and delimiters)

    def render(self, context: Context) -> str:
        return self.family.render(context, self.format)


# token ids: the reference's rebase.py (logits_require_id) and the models' cards
PRM_SPECS: dict[str, PRMSpec] = {
    # peiyi9979/math-shepherd-mistral-7b-prm: '+' 648 / '-' 387 at the tag 'ки'
    "mistral": PRMSpec("sglang", FAMILY_OF_MODEL["mistral"], 648, 387),
    # the reference's llemma PRM reads token 8094 at the step tag; score = p(8094)
    "llemma": PRMSpec("sglang", FAMILY_OF_MODEL["llemma"], 8094, None),
    # RLHFlow Llama3.1-8B PRM: '+' 10 / '-' 12 after each step's user turn
    "llama": PRMSpec("sglang", FAMILY_OF_MODEL["llama"], 10, 12),
    # Qwen/Qwen2.5-Math-PRM-7B: a two-class head at each <extra_0>
    "qwen": PRMSpec("vllm", FAMILY_OF_MODEL["qwen"]),
}

REWARD_APIS = ("ets", "sglang", "vllm")


# ---------------------------------------------------------------------------- adapters


SERVE_REWARD = "ets serve reward --port PORT"  # how to start a reward server, for the start checks' errors


class _HTTPReward(HTTPBackend, Reward):
    what = "reward"

    def __init__(self, pool: HostPool, *, model: str | None = None) -> None:
        super().__init__(pool)
        self.model = model

    async def _get_models(self, host: str) -> list[str]:
        body = await self.start_check("/v1/models", host=host, serve=SERVE_REWARD)
        data = body.get("data") if isinstance(body, dict) else None
        return [str(m.get("id")) for m in data or [] if isinstance(m, dict)]

    def _check_model(self, host: str, ids: list[str]) -> None:
        if not ids:
            return
        if self.model is None:
            self.model = ids[0]
            return
        match = served_model(self.model, ids)
        if match is None:
            raise BackendError(
                f"the reward server serves {', '.join(map(repr, ids))}, not the configured reward model "
                f"{self.model!r}; point --reward_host at the right server or change the model name",
                where=host + "/v1/models")
        self.model = match


class _PerStepReward(_HTTPReward):
    """A PRM server asked once per context, all of a batch's requests in flight at once."""

    async def score(self, contexts: Sequence[Context]) -> list[float | None]:
        if not contexts:
            return []
        await self.start()
        return list(await asyncio.gather(*[self._score_one(c) for c in contexts]))

    async def _score_one(self, context: Context) -> float | None:
        raise NotImplementedError


class EtsReward(_HTTPReward):
    """Client of ``ets serve reward`` (:mod:`ets.serve.reward_server`)."""

    def __init__(self, pool: HostPool, *, model: str | None = None, batch_size: int = 16) -> None:
        super().__init__(pool, model=model)
        self.batch_size = max(1, int(batch_size))
        self.info: dict[str, Any] = {}

    async def check_servers(self) -> None:
        for host in self.pool.hosts:
            info = await self.start_check("/info", host=host, serve=SERVE_REWARD)
            if not isinstance(info, dict) or info.get("server") != "ets-reward":
                raise BackendError("this is not an `ets serve reward` server (GET /info does not say "
                                   "\"server\": \"ets-reward\"); pass --reward_api sglang or vllm",
                                   where=host + "/info")
            self._check_model(host, [str(info.get("model"))] if info.get("model") else [])
            self.info = info

    async def score(self, contexts: Sequence[Context]) -> list[float | None]:
        if not contexts:
            return []
        await self.start()
        chunks = [list(contexts[i:i + self.batch_size]) for i in range(0, len(contexts), self.batch_size)]
        results = await asyncio.gather(*[self._score_chunk(c) for c in chunks])
        return [s for chunk in results for s in chunk]

    async def _score_chunk(self, contexts: list[Context]) -> list[float | None]:
        body = {"contexts": [{"question": c.question, "prompt": c.prompt, "steps": list(c.steps)} for c in contexts]}
        host, resp = await self.pool.post("/score", body, affinity=contexts[0].question)
        scores = resp.get("scores") if isinstance(resp, dict) else None
        if not isinstance(scores, list) or len(scores) != len(contexts):
            raise BackendError(f"the reward server answered {len(contexts)} contexts with "
                               f"{len(scores) if isinstance(scores, list) else 'no'} scores", where=host + "/score")
        return [None if s is None else float(s) for s in scores]


class SGLangGenerateReward(_PerStepReward):
    """Token-logit PRM on SGLang's native ``/generate`` (see the module docstring)."""

    def __init__(self, pool: HostPool, *, spec: PRMSpec, model: str | None = None) -> None:
        super().__init__(pool, model=model)
        if spec.good_id is None:
            raise ValueError("a token-logit PRM needs the id of its 'good' token")
        self.spec = spec

    async def check_servers(self) -> None:
        for host in self.pool.hosts:
            try:
                info = await self.start_check("/get_model_info", host=host,
                                              serve="ets serve reward --engine sglang --model PRM --port PORT")
            except BackendError as exc:
                if exc.details.get("status") == 404:
                    raise BackendError(
                        "the reward server has no SGLang /get_model_info: it is not an SGLang server; "
                        "pass --reward_api vllm or ets, or serve the PRM with `ets serve reward --engine sglang`",
                        where=host) from None
                raise
            path = info.get("model_path") if isinstance(info, dict) else None
            self._check_model(host, [str(path)] if path else [])

    def body(self, context: Context) -> dict:
        ids = [self.spec.good_id] + ([self.spec.bad_id] if self.spec.bad_id is not None else [])
        return {
            "text": self.spec.render(context),
            "sampling_params": {"max_new_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1},
            "return_logprob": True,
            "logprob_start_len": -1,
            "top_logprobs_num": 0,
            "token_ids_logprob": ids,
        }

    async def _score_one(self, context: Context) -> float | None:
        if not context.steps:
            return None
        host, resp = await self.pool.post("/generate", self.body(context), affinity=context.question)
        return parse_sglang_score(resp, self.spec.good_id, self.spec.bad_id, where=host + "/generate")


def parse_sglang_score(resp: Any, good_id: int, bad_id: int | None, *, where: str = "") -> float:
    """The score from a ``/generate`` answer's ``meta_info.output_token_ids_logprobs[0]``."""
    if isinstance(resp, list):  # a batch answer; we send single texts
        resp = resp[0] if resp else {}
    try:
        rows = resp["meta_info"]["output_token_ids_logprobs"]
        first = rows[0]
    except (KeyError, TypeError, IndexError):
        raise BackendError("the SGLang answer has no meta_info.output_token_ids_logprobs[0]; is "
                           "return_logprob supported by this server version?", where=where) from None
    found: dict[int, float] = {}
    for entry in first or []:
        if isinstance(entry, dict):
            lp, tid = entry.get("logprob"), entry.get("token_id")
        else:
            lp, tid = entry[0], entry[1]
        if lp is not None and tid is not None:
            found[int(tid)] = float(lp)
    if good_id not in found or (bad_id is not None and bad_id not in found):
        raise BackendError(f"the SGLang answer lacks the logprobs of token ids {good_id}"
                           f"{'/' + str(bad_id) if bad_id is not None else ''}: got {sorted(found)}", where=where)
    if bad_id is None:
        return math.exp(found[good_id])
    d = found[bad_id] - found[good_id]
    return 1.0 / (1.0 + math.exp(d)) if d < 700 else 0.0


class VLLMPoolingReward(_PerStepReward):
    """Classification-head PRM on vLLM's ``/pooling`` (see the module docstring)."""

    def __init__(self, pool: HostPool, *, spec: PRMSpec, model: str | None = None, task: str | None = None) -> None:
        super().__init__(pool, model=model)
        self.spec = spec
        self.task = task  # e.g. "token_classify" for vLLM versions whose /pooling takes a task

    async def check_servers(self) -> None:
        for host in self.pool.hosts:
            self._check_model(host, await self._get_models(host))

    def body(self, context: Context) -> dict:
        body: dict[str, Any] = {"model": self.model, "input": self.spec.render(context)}
        if self.task:
            body["task"] = self.task
        return body

    async def _score_one(self, context: Context) -> float | None:
        if not context.steps:
            return None
        host, resp = await self.pool.post("/pooling", self.body(context), affinity=context.question)
        return parse_pooling_score(resp, where=host + "/pooling")


def parse_pooling_score(resp: Any, *, where: str = "") -> float:
    """The newest step's p(good) from a ``/pooling`` answer (``data[0].data``: one row a step)."""
    try:
        data = resp["data"][0]["data"]
    except (KeyError, TypeError, IndexError):
        raise BackendError(f"the vLLM /pooling answer has no data[0].data: {str(resp)[:200]}", where=where) from None
    if isinstance(data, str):
        raise BackendError("the vLLM /pooling answer is base64-encoded; ask for encoding_format float",
                           where=where)
    rows = data if data and isinstance(data[0], list) else [data]
    last = rows[-1] if rows else None
    if not last or len(last) < 2:
        raise BackendError(f"the vLLM /pooling answer has no two-class row per step: {str(data)[:200]}", where=where)
    a, b = float(last[-2]), float(last[-1])
    if not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 and abs(a + b - 1.0) < 1e-3):  # logits, not probabilities
        m = max(a, b)
        ea, eb = math.exp(a - m), math.exp(b - m)
        return eb / (ea + eb)
    return b
