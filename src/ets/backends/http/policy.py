"""The policy over the OpenAI-compatible ``/v1/completions`` API.

vLLM, SGLang and llama.cpp's servers (``llama-server`` and llama-cpp-python's
``python -m llama_cpp.server``) all speak it. One expansion is one request with
``n = k`` samples sharing the prompt, so the server's prefix cache holds the
shared prefix once; a server that answers ``n = k`` with fewer choices
(llama-cpp-python returns one) is remembered and asked with ``k`` requests of
``n = 1`` from then on.

Request body (https://platform.openai.com/docs/api-reference/completions)::

    {"model": M, "prompt": TEXT, "n": k, "max_tokens": T, "temperature": t,
     "stop": [DELIM...], "logprobs": 1 (when n > 1), "seed": s?}

``seed`` (only with a config seed) is a hash of the seed, the node's place in
the search and the sample's index (``base.request_seed``): two nodes with the
same text get different seeds, and a rerun the same ones.

plus, per server family (read from ``owned_by`` in ``GET /v1/models``):
vLLM and ours (``ets serve policy --engine ets``, ``owned_by: "ets"``)
``"include_stop_str_in_output": true`` and SGLang ``"no_stop_trim": true``
so the delimiter stays in the text. Where the server strips it and says which
stop matched (vLLM's ``stop_reason``), we put it back; where it does not say
(llama.cpp), a choice that ended with ``finish_reason == "stop"`` gets the
first delimiter back: llama.cpp does not tell a stop string from end of text.

Token count per sample: the length of the choice's ``logprobs.tokens``, or
our server's ``ets.completion_tokens`` (it computes no logprobs, so none are
asked of it); with one choice, ``usage.completion_tokens``; failing all, the
request's completion tokens shared out by text length.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ets.backends.base import BackendError, Context, Policy, SamplingParams, Step, request_seed
from ets.backends.http.backend import HTTPBackend, served_model
from ets.backends.http.transport import HostPool


class OpenAICompletionsPolicy(HTTPBackend, Policy):
    """A :class:`~ets.backends.base.Policy` on ``/v1/completions`` of one or several servers."""

    what = "policy"

    def __init__(self, pool: HostPool, *, model: str | None = None, use_n: bool = True,
                 request_logprobs: bool = True) -> None:
        super().__init__(pool)
        self.model = model
        self.use_n = use_n  # False: always k requests of n = 1
        self.request_logprobs = request_logprobs
        self.dialect: dict[str, str] = {}  # host -> "vllm" | "sglang" | "llamacpp" | "ets" | "openai"
        self._no_n: set[str] = set()  # hosts seen ignoring n

    @property
    def protocol(self) -> str:
        """The API used and the server families that answered it (run.json's ``protocols``)."""
        families = sorted(set(self.dialect.values()))
        return "openai /v1/completions" + (f" ({', '.join(families)})" if families else "")

    # ------------------------------------------------------------------ start
    async def check_servers(self) -> None:
        """Check every host answers and serves the configured model; fail fast, naming the URL."""
        served: dict[str, list[str]] = {}
        for host in self.pool.hosts:
            body = await self.start_check("/v1/models", host=host,
                                          serve="ets serve policy --engine ets --port PORT")
            models = [m for m in (body.get("data") or []) if isinstance(m, dict)] if isinstance(body, dict) else []
            ids = [str(m.get("id")) for m in models]
            if not ids:
                raise BackendError("the policy server lists no model in GET /v1/models", where=host + "/v1/models")
            served[host] = ids
            owners = {str(m.get("owned_by", "")).lower() for m in models}
            self.dialect[host] = ("vllm" if "vllm" in owners else "sglang" if "sglang" in owners
                                  else "llamacpp" if "me" in owners or "llamacpp" in owners
                                  else "ets" if "ets" in owners else "openai")
        self.model = self._model_served(served)

    def _model_served(self, served: dict[str, list[str]]) -> str:
        """The model to ask for: the configured one as the servers name it, or the one they all serve."""
        if self.model is None:
            first = served[self.pool.hosts[0]][0]
            others = [h for h in self.pool.hosts[1:] if first not in served[h]]
            if others:
                raise BackendError(
                    f"the policy servers serve different models: {self.pool.hosts[0]} serves {first!r}, "
                    f"{others[0]} serves {served[others[0]]}; pass the model name to use",
                    where=others[0])
            return first
        model = self.model
        for host, ids in served.items():
            match = served_model(model, ids)
            if match is None:
                raise BackendError(
                    f"the policy server serves {', '.join(map(repr, ids))}, not the configured model "
                    f"{model!r}; point --policy_host at the right server or change the model name",
                    where=host + "/v1/models")
            model = match
        return model

    # ------------------------------------------------------------------ Policy
    async def generate(self, context: Context, n: int, params: SamplingParams) -> list[Step]:
        if n <= 0:
            return []
        await self.start()
        prompt = context.text
        affinity = context.question
        host = self.pool.pick(affinity)
        if self.use_n and n > 1 and host not in self._no_n:
            steps, answered_host = await self._request(prompt, n, params, affinity, seed_offset=0)
            if len(steps) >= n:
                return steps[:n]
            # the server ignored n (llama-cpp-python answers one choice): remember, ask for the rest
            self._no_n.add(answered_host)
            rest = await asyncio.gather(*[
                self._request(prompt, 1, params, affinity, seed_offset=i) for i in range(len(steps), n)])
            return steps + [s for chunk, _ in rest for s in chunk][: n - len(steps)]
        results = await asyncio.gather(*[
            self._request(prompt, 1, params, affinity, seed_offset=i) for i in range(n)])
        return [s for chunk, _ in results for s in chunk][:n]

    async def count_tokens(self, text: str) -> int:
        await self.start()
        host = self.pool.pick(text[:200])
        dialect = self.dialect.get(host, "openai")
        if dialect == "llamacpp":
            try:
                _, body = await self.pool.post("/extras/tokenize/count", {"input": text}, host=host)
                return int(body["count"])
            except BackendError as exc:
                _raise_if_timed_out(exc)
            except (KeyError, TypeError, ValueError):
                pass
        elif dialect in ("vllm", "sglang", "ets"):
            try:
                _, body = await self.pool.post("/tokenize", {"model": self.model, "prompt": text}, host=host)
                if "count" in body:
                    return int(body["count"])
                return len(body["tokens"])
            except BackendError as exc:
                _raise_if_timed_out(exc)
            except (KeyError, TypeError, ValueError):
                pass
        # any OpenAI server: the prompt tokens of a one-token completion
        _, body = await self.pool.post("/v1/completions", {
            "model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0.0}, host=host)
        try:
            return int(body["usage"]["prompt_tokens"])
        except (KeyError, TypeError, ValueError):
            raise BackendError("the policy server's completion has no usage.prompt_tokens; cannot count tokens",
                               where=host + "/v1/completions") from None

    # ------------------------------------------------------------------ one request
    def body(self, prompt: str, n: int, params: SamplingParams, dialect: str, seed_offset: int = 0) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "n": n,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stop": list(params.stop),
            "stream": False,
        }
        if self.request_logprobs and n > 1 and dialect not in ("llamacpp", "ets"):
            # per-choice token lists: the token count of each sample (with one choice, usage says it;
            # llama-cpp-python answers one choice anyway, and its logprobs cost 4-5x the generation;
            # ours says each choice's count and refuses logprobs)
            body["logprobs"] = 1
        if params.seed is not None:
            # per node (params.stream) and sample: a server honouring the seed (vLLM) would otherwise give two
            # nodes with the same text the same samples
            body["seed"] = request_seed(params.seed, params.stream, seed_offset)
        if dialect in ("vllm", "ets"):
            body["include_stop_str_in_output"] = True
        elif dialect == "sglang":
            body["no_stop_trim"] = True
        return body

    async def _request(self, prompt: str, n: int, params: SamplingParams, affinity: str,
                       seed_offset: int) -> tuple[list[Step], str]:
        def body(host: str) -> dict:  # the extras depend on the server family of the host chosen
            return self.body(prompt, n, params, self.dialect.get(host, "openai"), seed_offset)

        host, resp = await self.pool.post("/v1/completions", body, affinity=affinity)
        return parse_completion(resp, params.stop, where=host + "/v1/completions"), host


def parse_completion(resp: Any, stops: tuple[str, ...] | list[str], *, where: str = "") -> list[Step]:
    """Steps from an OpenAI completions response (choices ordered by ``index``)."""
    try:
        choices = sorted(resp["choices"], key=lambda c: c.get("index", 0))
    except (KeyError, TypeError, AttributeError):
        raise BackendError(f"the policy server's answer has no choices: {str(resp)[:200]}", where=where) from None
    usage = resp.get("usage") or {}
    total_completion = usage.get("completion_tokens")
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0

    texts: list[str] = []
    finishes: list[str] = []
    counts: list[int | None] = []
    for choice in choices:
        text = choice.get("text") or ""
        finish = choice.get("finish_reason") or "stop"
        if finish == "stop" and stops and not any(text.endswith(s) for s in stops):
            if "stop_reason" in choice:  # vLLM says which stop matched: a string, or None / an id for EOS
                if isinstance(choice["stop_reason"], str) and choice["stop_reason"] in stops:
                    text += choice["stop_reason"]
            else:
                text += stops[0]
        texts.append(text)
        finishes.append("length" if finish == "length" else "stop")
        logprobs = choice.get("logprobs")
        tokens = logprobs.get("tokens") if isinstance(logprobs, dict) else None
        ours = choice.get("ets")  # our server's own count of the choice's tokens
        ours = ours.get("completion_tokens") if isinstance(ours, dict) else None
        counts.append(len(tokens) if isinstance(tokens, list) else ours if isinstance(ours, int) else None)

    if any(c is None for c in counts):
        if len(choices) == 1 and total_completion is not None:
            counts = [int(total_completion)]
        elif total_completion is not None:
            total_chars = sum(len(t) for t in texts) or 1
            counts = [c if c is not None else max(1, round(int(total_completion) * len(t) / total_chars))
                      for c, t in zip(counts, texts)]
        else:
            raise BackendError("the policy server's answer has neither logprobs.tokens nor usage.completion_tokens",
                               where=where)
    steps = []
    for i, (text, finish, count) in enumerate(zip(texts, finishes, counts)):
        steps.append(Step(
            text=text,
            num_tokens=int(count or 0),
            finish_reason=finish,
            prompt_tokens_computed=max(0, prompt_tokens - cached) if i == 0 else 0,
            prompt_tokens_reused=cached if i == 0 else 0,
        ))
    return steps


def _raise_if_timed_out(exc: BackendError) -> None:
    """A server that did not answer in time would not answer the fallback either: the request fails
    after one timeout, not two."""
    if exc.details.get("timed_out"):
        raise exc
