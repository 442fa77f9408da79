"""``ets serve policy --engine ets``: our in-process llama.cpp policy behind OpenAI's ``/v1/completions``.

llama-cpp-python's server decodes one request at a time; this one hands every request to
:class:`~ets.backends.llamacpp.LlamaCppPolicy`, whose scheduler decodes all the requests in flight
together (continuous batching: one ``llama_decode`` call extends every running sample by a token),
copies a prompt's prefix from any slot that holds it, busy or not, and evaluates the prompt of a
request with ``n`` > 1 once for its ``n`` samples. A search over HTTP then runs about as fast as the
same search in process (docs/serving.md has the figures).

* ``POST /v1/completions``: ``prompt`` (one string), ``n``, ``max_tokens`` (default 16),
  ``temperature`` (default 1), ``stop`` (a string or a list), ``seed``, ``include_stop_str_in_output``
  (vLLM's field: keep the stop string in the text; by default it is cut, as OpenAI does). A choice
  says which stop string ended it in ``stop_reason`` (vLLM's field: null at the end of text or a
  length cut) and its own token count in ``ets.completion_tokens`` (logprobs are not computed);
  ``usage.prompt_tokens_details.cached_tokens`` counts the prompt tokens found in the cache.
* ``POST /tokenize`` ``{"prompt": TEXT}`` -> ``{"tokens": [...], "count": N, "max_model_len": n_ctx}``.
* ``GET /health`` (with the token ``ets serve`` checks), ``GET /v1/models``, ``GET /info`` (with the
  engine's totals: requests, ``llama_decode`` calls, prompt tokens computed and reused)
  (``owned_by: "ets"``: how our policy client knows the fields above are there).

Seeds: a request's ``seed`` fixes its draws: the same prompt, settings and seed give the same text,
whether its prompt was in the cache or not (the prompt's last token is evaluated in a call of its own,
``SlotEngine.split_last``); its ``n`` samples are independent draws (one random stream each, keyed by
the seed, the prompt and the sample's index), and are what the engine in process draws for that seed.
With no seed, a random one. llama.cpp's logits move slightly with a batch's make-up, so a request
decoded beside others can, now and then, differ by a token from the same request decoded alone.

Fields the engine cannot honour (``stream``, ``logprobs``, ``echo``, ``top_p`` other than 1, penalties,
...) are refused (400, naming the field), as are several prompts a request; a body over
``--max-body-mb`` is 413; a prompt whose ``max_tokens`` cannot fit ``--n-ctx`` is 400. Errors are in
OpenAI's shape plus our ``detail`` (:func:`ets.serve.search_server.error_body`). Binds 127.0.0.1
unless told otherwise.

Run it: ``ets serve policy --engine ets [--model smollm2-135m|qwen2.5-coder-0.5b|FILE.gguf]``, or
``python -m ets.serve.policy_server`` (same flags).
"""

import argparse
import asyncio
import math
import os
import secrets
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ets import __version__
from ets.backends.base import BackendError, SamplingParams
from ets.backends.llamacpp import LlamaCppPolicy, default_threads
from ets.backends.llamacpp.policy import matched_stop
from ets.backends.llamacpp.weights import resolve_policy_model
from ets.models import BUILTIN_POLICIES, DEFAULT_POLICY
from ets.serve.reward_server import TOKEN_ENV, StartError, add_common_routes, bind, failed, read_body, run_app
from ets.serve.search_server import Refused, add_error_handlers, number, one_prompt, parse_body, refuse_unsupported

DEFAULT_PORT = 8011
DEFAULT_N_CTX = 8192  # as the in-process policy of ets run
MAX_BODY_MB = 1.0  # a prompt of a few thousand tokens is tens of KB
MAX_N = 64  # samples a request: beyond, the slots of the engine run short
MAX_STOPS = 16
WHO = "ets policy server"

# fields the engine cannot honour, with the value that asks nothing of it (null is always taken as unset)
UNSUPPORTED = {
    "stream": (False, "answers come whole"),
    "logprobs": (None, "log-probabilities are not computed; a choice's token count is in its ets field"),
    "top_logprobs": (None, "log-probabilities are not computed"),
    "prompt_logprobs": (None, "log-probabilities are not computed"),
    "echo": (False, "the answer is the completion only"),
    "suffix": ("", "the engine writes after the prompt only"),
    "best_of": (1, "every sample is returned: ask for n of them"),
    "logit_bias": ({}, "the engine samples from the model's own logits"),
    "top_p": (1, "the engine samples with temperature only"),
    "top_k": (-1, "the engine samples with temperature only"),
    "min_p": (0, "the engine samples with temperature only"),
    "frequency_penalty": (0, "the engine samples from the model's own logits"),
    "presence_penalty": (0, "the engine samples from the model's own logits"),
    "repetition_penalty": (1, "the engine samples from the model's own logits"),
    "min_tokens": (0, "the engine stops at the first stop string or end of text"),
    "ignore_eos": (False, "the engine stops at the end of text"),
    "stop_token_ids": ([], "stop strings only"),
}


def read_prompt(body: dict) -> str:
    prompt = one_prompt(body, "one prompt as a string (one prompt a request; token ids are not read)")
    if not prompt:
        raise Refused(400, "prompt: empty", "prompt")
    return prompt


def read_stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise Refused(400, f"stop: expected a string or a list of at most {MAX_STOPS} strings", "stop")
    return tuple(s for s in stops if s)


def read_params(body: dict, prompt_tokens: int, n_ctx: int) -> tuple[int, SamplingParams, bool]:
    """``n``, the sampling of each sample, and whether the stop string stays in the text."""
    refuse_unsupported(body, UNSUPPORTED, "this server")
    n = number(body, "n", int)
    n = 1 if n is None else n
    if not 1 <= n <= MAX_N:
        raise Refused(400, f"n: expected 1 to {MAX_N} samples, got {n}", "n")
    max_tokens = number(body, "max_tokens", int)
    max_tokens = 16 if max_tokens is None else max_tokens  # OpenAI's default
    if max_tokens < 1:
        raise Refused(400, f"max_tokens: expected at least 1, got {max_tokens}", "max_tokens")
    # the prompt's cells once, each sample's own after them: what one request needs of the shared cache
    if prompt_tokens + n * max_tokens > n_ctx:
        raise Refused(400, f"max_tokens: the prompt's {prompt_tokens} tokens and {n} x {max_tokens} more do not "
                           f"fit the context of {n_ctx} tokens (--n-ctx); ask for fewer", "max_tokens")
    temperature = number(body, "temperature", float)
    temperature = 1.0 if temperature is None else temperature
    if temperature < 0:
        raise Refused(400, f"temperature: expected a number >= 0, got {temperature}", "temperature")
    seed = number(body, "seed", int)
    keep = body.get("include_stop_str_in_output", False)
    if not isinstance(keep, bool):
        raise Refused(400, "include_stop_str_in_output: expected true or false", "include_stop_str_in_output")
    # no stream: the engine's key is the prompt itself, beside the seed (two prompts, two draws)
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, stop=read_stops(body),
                            seed=secrets.randbits(32) if seed is None else seed)
    return n, params, keep


def choice(index: int, step, stops: tuple[str, ...], keep: bool) -> dict:
    stop = matched_stop(step.text, stops) if step.finish_reason == "stop" else None
    text = step.text[: len(step.text) - len(stop)] if stop and not keep else step.text
    return {"index": index, "text": text, "logprobs": None, "finish_reason": step.finish_reason,
            "stop_reason": stop, "ets": {"completion_tokens": step.num_tokens}}


def create_app(policy: LlamaCppPolicy, *, model_name: str, token: str | None = None,
               max_body_bytes: int = int(MAX_BODY_MB * 2**20), info: dict | None = None):
    """A FastAPI app answering ``/v1/completions`` with ``policy``'s scheduler (closed when the app stops)."""
    from fastapi import FastAPI, Request

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(policy.close)

    engine = policy.engine
    engine.split_last = True  # a request made twice gives the same text, however much of it was cached
    n_ctx = engine.n_ctx
    app = FastAPI(title="ets policy server", version=__version__, lifespan=lifespan)
    app.state.requests = 0

    def described() -> dict[str, Any]:  # the engine's totals so far: how much the batching shared
        return {"server": "ets-policy", "model": model_name, "version": __version__, "n_ctx": n_ctx,
                "n_slots": engine.n_slots, "n_batch_seqs": policy.n_batch_seqs, **(info or {}),
                "requests": app.state.requests, "decode_calls": engine.decode_calls,
                "prompt_tokens_computed": engine.prompt_tokens_computed,
                "prompt_tokens_reused": engine.prompt_tokens_reused, "tokens_shared": engine.tokens_shared}

    add_common_routes(app, model_name, described, token)
    add_error_handlers(app)

    async def read(request: Request) -> tuple[dict, str, list[int]]:
        body = parse_body(await read_body(request, max_body_bytes, advice="send one prompt a request"))
        model = body.get("model")
        if model is not None and model != model_name:
            raise Refused(404, f"model {str(model)[:80]!r}: not served here; this server serves {model_name!r} "
                               "(GET /v1/models)", "model")
        prompt = read_prompt(body)
        return body, prompt, policy.engine.tokenize(prompt)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        _, _, tokens = await read(request)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": n_ctx}

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body, prompt, tokens = await read(request)
        n, params, keep = read_params(body, len(tokens), n_ctx)
        app.state.requests += 1
        try:
            steps = await asyncio.wrap_future(policy.submit(prompt, n, params))
        except BackendError as exc:
            raise Refused(500, f"the llama.cpp engine failed: {exc}") from None
        completion = sum(s.num_tokens for s in steps)
        prompt_tokens = steps[0].prompt_tokens_computed + steps[0].prompt_tokens_reused
        return {"id": f"cmpl-ets-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": [choice(i, s, params.stop, keep) for i, s in enumerate(steps)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                          "total_tokens": prompt_tokens + completion,
                          "prompt_tokens_details": {"cached_tokens": steps[0].prompt_tokens_reused}}}

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help=f"a GGUF file or a built-in policy ({', '.join(BUILTIN_POLICIES)}); "
                             "default: the built-in CPU policy")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--served-model-name", dest="served_model_name", default=None,
                        help="model name the server reports (default: the built-in policy's name, or the file's)")
    parser.add_argument("--n-ctx", dest="n_ctx", type=int, default=DEFAULT_N_CTX,
                        help=f"tokens of the KV cache every request shares (default {DEFAULT_N_CTX})")
    parser.add_argument("--n-threads", "--n_threads", dest="n_threads", type=int, default=None,
                        help="llama.cpp threads (default: all cores, or ETS_LLAMA_THREADS)")
    parser.add_argument("--max-body-mb", dest="max_body_mb", type=float, default=MAX_BODY_MB,
                        help=f"largest request body in MB; a larger one is refused with 413 (default {MAX_BODY_MB:g})")
    parser.add_argument("--log-level", dest="log_level", default="warning")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ets.serve.policy_server", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not (math.isfinite(args.max_body_mb) and args.max_body_mb > 0):
        return failed(f"--max-body-mb {args.max_body_mb}: expected a number of megabytes > 0", 2, WHO)
    if args.n_ctx < 64 or (args.n_threads is not None and args.n_threads < 1):
        return failed("--n-ctx: expected at least 64 tokens; --n-threads: at least 1", 2, WHO)
    try:
        sock = bind(args.host, args.port)  # before the model loads: a port in use is said at once
        path = resolve_policy_model(args.model)
        if not path.is_file():
            raise StartError(f"--model {args.model}: no such file; expected a GGUF file or a built-in policy "
                             f"({', '.join(BUILTIN_POLICIES)})", 2)
        threads = args.n_threads or default_threads(shared=False)
        policy = LlamaCppPolicy(model_path=path, n_ctx=args.n_ctx, n_threads=threads)
    except StartError as exc:
        return failed(str(exc), exc.code, WHO)
    except (BackendError, ValueError, OSError) as exc:  # a file that does not load
        return failed(f"cannot load the policy: {exc}", 1, WHO)
    # a built-in policy by its name, as ets run's config names it (--policy_model checks it)
    builtin = args.model or DEFAULT_POLICY
    name = args.served_model_name or (builtin if builtin in BUILTIN_POLICIES else Path(path).name)
    url = f"http://{args.host}:{args.port}"
    app = create_app(policy, model_name=name, token=os.environ.get(TOKEN_ENV) or None,
                     max_body_bytes=int(args.max_body_mb * 2**20),
                     info={"model_path": str(policy.model_path), "threads": threads})
    run_app(app, sock, log_level=args.log_level, on_ready=lambda: print(f"{WHO} ready at {url}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
