"""``ets serve search``: the search itself behind an OpenAI endpoint.

Any OpenAI client asks a question; the server runs the configured search on it
(the config, models and flags of ``ets run``: with no ``--policy_host`` the
built-in CPU models in this process) and answers with the trajectory the
aggregation picks (``--agg_func``, ``--weighted``, ``--weight_agg``, as ``ets
evaluate`` picks one; default: majority vote weighted by the last step score).

* ``POST /v1/chat/completions``: the question is the last ``user`` message
  (earlier messages are not read); the answer is ``choices[0].message.content``.
* ``POST /v1/completions``: the question is ``prompt`` (one string).
* Both add a field ``ets``: the extracted answer, how it was picked, the
  search's statistics (KV-cache figure, model calls, tokens, time...), and
  with ``"ets": {"return_tree": true}`` in the request the whole tree.
* ``GET /health`` (with the token ``ets serve`` checks), ``GET /info``, ``GET /v1/models``.

Request fields that map to search keys: ``temperature`` and ``seed`` replace
the config's; ``max_tokens`` (or ``max_completion_tokens``) lowers the budget
of a trajectory's steps, never raises it. Fields the search cannot honour
(``n`` > 1, ``stream``, ``stop``, ``logprobs``, ``tools``, ``top_p`` other than
1, ...) are refused (400, naming the field); fields that change nothing
(``user``, ``metadata``, ...) and unknown ones are ignored.

At most ``num_threads`` (the config key) searches run at once; up to
``--max-waiting`` more wait for a slot, beyond that a request is 503 (busy;
OpenAI clients retry it). A request that has not been answered within
``--timeout`` seconds, waiting included, is 504 and its search is cancelled.
Errors are ``{"error": {"message", "type", "param", "code"}, "detail": message}``
(OpenAI's shape, and our PRM server's ``detail``): 400 for a body the search
cannot take, 404 for another model's name, 413 for a body over
``--max-body-mb``, 502 for a model server that fails, 500 for the search
failing. Binds 127.0.0.1 unless told otherwise.

Run it: ``ets serve search [--config FILE] [--policy_host URL] [--reward_host URL]``,
or ``python -m ets.serve.search_server`` (same flags). docs/serving.md has the shapes.
"""


import argparse
import asyncio
import json
import math
import os
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ets import __version__
from ets.backends.base import BackendError, Backends
from ets.backends.factory import BackendSpec, build_backends
from ets.commands.run import (
    check_budgets, check_embed_model, check_flags, check_path_names, defaults_line, resolve_config,
)
from ets.config import ConfigError, SearchConfig
from ets.evaluate.aggregate import AGG_NAMES, SELECT_NAMES, Setting
from ets.evaluate.commands import parse_bool
from ets.evaluate.evaluator import evaluate_answers
from ets.evaluate.runs import model_type_of
from ets.search import SearchResult, prompt_overflow, prompt_text, search
from ets.serve.reward_server import (
    MAX_WAITING, TOKEN_ENV, ScoringThread, StartError, add_common_routes, bind, failed, read_body, run_app,
)

DEFAULT_PORT = 8013
DEFAULT_MODEL_NAME = "ets-search"
MAX_BODY_MB = 1.0  # a question and a few fields: a larger body is a mistake
DEFAULT_TIMEOUT = 600.0  # seconds a request may take, waiting for a slot included
WHO = "ets search server"

# fields the search cannot honour, with the value that asks nothing of it (null is always taken as unset)
UNSUPPORTED = {
    "n": (1, "one answer a request: the search picks one trajectory"),
    "stream": (False, "the answer exists only once the search ends"),
    "stop": (None, "the steps end where the prompt format says"),
    "logprobs": (False, "a trajectory is many samples, not one"),
    "top_logprobs": (0, "a trajectory is many samples, not one"),
    "logit_bias": ({}, "not passed to the policy"),
    "top_p": (1, "the policy samples with temperature only"),
    "frequency_penalty": (0, "not passed to the policy"),
    "presence_penalty": (0, "not passed to the policy"),
    "tools": ([], "the search writes a solution, it calls no tool"),
    "tool_choice": ("none", "the search writes a solution, it calls no tool"),
    "functions": ([], "the search writes a solution, it calls no tool"),
    "function_call": ("none", "the search writes a solution, it calls no tool"),
    "response_format": ({"type": "text"}, "the answer is the solution's text"),
    "best_of": (1, "the search has its own width (the config's)"),
    "echo": (False, "the answer is the solution only"),
    "suffix": ("", "the search writes after the question only"),
}
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
               422: "invalid_request_error", 500: "server_error", 502: "server_error", 503: "server_busy",
               504: "timeout"}


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    kwargs: dict


# the server's flags, in one table: argparse reads them, and argv() writes them back for `ets serve search`
OPTIONS = (
    Option(("--config", "--parameter_path"), dict(dest="config", help="YAML file of hyperparameters (as ets run's)")),
    Option(("--set",), dict(dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="override any config key, e.g. --set width=4 (repeatable)")),
    Option(("--width",), dict(type=int, help="trajectories a search wants (the config's width)")),
    Option(("--select_method",), dict(help="softmax_costmodel (ETS), softmax (REBASE), beam_search, dvts, best_of_n")),
    Option(("--prompt_format",), dict(help="prompt format (default: the policy's)")),
    Option(("--policy_host",), dict(nargs="+", help="policy server URL(s); none: the built-in CPU model in this process")),
    Option(("--reward_host",), dict(nargs="+", help="PRM server URL(s); none: an in-process PRM")),
    Option(("--reward_api",), dict(choices=("sglang", "sglang-generate", "vllm", "vllm-pooling", "ets"),
                                   help="PRM protocol (default: asked of the server)")),
    Option(("--policy_model",), dict(help="served model name to check for (HTTP), or a built-in policy / GGUF path")),
    Option(("--reward_model",), dict(help="PRM model name to check for (HTTP), or a PRM GGUF path read in-process")),
    Option(("--embed_model",), dict(help="sentence-transformers model for the diversity term")),
    Option(("--embed_device",), dict(help="device of the sentence embedder")),
    Option(("--request_timeout",), dict(type=float, metavar="SECONDS",
                                        help="seconds a model server has to answer one request (default 120)")),
    Option(("--scripted",), dict(action="store_true", help="a made-up scripted policy and PRM (no model): for trying")),
    Option(("--scripted_delay",), dict(type=float, default=0.0, metavar="SECONDS",
                                       help="with --scripted: each policy call waits this long")),
    Option(("--agg_func",), dict(choices=SELECT_NAMES, default="majority_vote",
                                 help="how the answer is picked: majority_vote (default) or best-of-N by min, prod, "
                                      "mean or last, as ets evaluate")),
    Option(("--weighted",), dict(type=parse_bool, default=True, metavar="{True,False}",
                                 help="majority_vote: weigh each vote by --weight_agg of its step scores (default True)")),
    Option(("--weight_agg",), dict(choices=AGG_NAMES, default="last", help="the vote's weight (default last)")),
    Option(("--host",), dict(default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")),
    Option(("--port",), dict(type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")),
    Option(("--served-model-name",), dict(dest="served_model_name", default=DEFAULT_MODEL_NAME,
                                          help=f"the model name clients send (default {DEFAULT_MODEL_NAME})")),
    Option(("--timeout",), dict(type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                                help="seconds a request may take, waiting included; then 504 "
                                     f"(default {DEFAULT_TIMEOUT:g})")),
    Option(("--max-waiting",), dict(dest="max_waiting", type=int, default=MAX_WAITING,
                                    help=f"requests that may wait while num_threads searches run; more are 503 "
                                         f"(default {MAX_WAITING})")),
    Option(("--max-body-mb",), dict(dest="max_body_mb", type=float, default=MAX_BODY_MB,
                                    help=f"largest request body in MB; larger is 413 (default {MAX_BODY_MB:g})")),
    Option(("--log-level",), dict(dest="log_level", default="warning")),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        parser.add_argument(*option.flags, **option.kwargs)


def argv(args: argparse.Namespace) -> list[str]:
    """The flags of ``args`` that differ from their defaults, as a command line of this module."""
    out: list[str] = []
    for option in OPTIONS:
        dest = option.kwargs.get("dest") or option.flags[0].lstrip("-").replace("-", "_")
        store_true = option.kwargs.get("action") == "store_true"
        value, default = getattr(args, dest, None), option.kwargs.get("default", False if store_true else None)
        if value is None or value == default:
            continue
        flag = option.flags[0]
        if store_true:
            out.append(flag)
        elif option.kwargs.get("action") == "append":
            out += [part for item in value for part in (flag, item)]
        elif isinstance(value, list):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


class Refused(Exception):
    """What the client must change or wait for: an HTTP status, a message, the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param = status, param


def error_body(status: int, message: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "param": param, "code": status},
            "detail": message}


def setting_from(agg_func: str, weighted: bool, weight_agg: str | None) -> Setting:
    """The answer's selection, as ``ets evaluate`` reads its three flags (ValueError when they do not fit)."""
    vote = agg_func == "majority_vote"
    return Setting(agg_func, vote and weighted, weight_agg if vote and weighted else None)


def pick(result: SearchResult, setting: Setting, model_type: str) -> tuple[int | None, str | None]:
    """The index of the trajectory ``setting`` picks among the search's finished ones, and its extracted
    answer (None, None when none is picked): ``ets evaluate``'s choice for this one problem."""
    if not result.answers:
        return None, None
    problem = {"id": 0, "model_answer": result.answers, "ground_truth_answer": None}
    chosen = evaluate_answers([problem], setting.agg_func, setting.weighted, setting.weight_agg,
                              model_type).problems[0]
    return chosen.picked, chosen.answer


# -- reading a request ----------------------------------------------------------------------------------


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Refused(400, f"the body is a JSON {type(body).__name__}; expected an object")
    return body


def refuse_unsupported(body: dict, table: dict = UNSUPPORTED, who: str = "the search") -> None:
    """400 naming the first field of ``table`` (name -> (the value that asks nothing, why)) ``body`` sets."""
    for name, (harmless, why) in table.items():
        value = body.get(name)
        if value is None or value == harmless or (name == "stream" and value is False):
            continue
        raise Refused(400, f"{name}: {json.dumps(value)[:80]} is not supported by {who} ({why}); "
                           f"leave it out", name)


def text_of(content: Any, where: str) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise Refused(400, f"{where}[{i}]: a {kind!s} part; the search reads text parts only", where)
            texts.append(part["text"])
        return "\n".join(texts)
    raise Refused(400, f"{where}: expected a string or a list of text parts, got {json.dumps(content)[:60]}", where)


def question_of_chat(body: dict) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Refused(400, "messages: expected a non-empty list of {role, content} messages", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise Refused(400, f"messages[{i}]: expected an object with a role and a content", "messages")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise Refused(400, "messages: no user message; the question is the last message whose role is user",
                      "messages")
    return text_of(messages[users[-1]].get("content"), f"messages[{users[-1]}].content")


def one_prompt(body: dict, expected: str) -> str:
    """``/v1/completions``' ``prompt``: one string, or a list of exactly one; else 400 saying ``expected``."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise Refused(400, f"prompt: expected {expected}", "prompt")
    return prompt


def question_of_prompt(body: dict) -> str:
    return one_prompt(body, "one question as a string (one search a request)")


def number(body: dict, name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)) \
            or not math.isfinite(value):
        raise Refused(400, f"{name}: expected {'an integer' if kind is int else 'a number'}, "
                           f"got {json.dumps(value)[:40]}", name)
    return kind(value)


@dataclass
class Ask:
    """One request, read: the question, the config it is searched with, the options of our ``ets`` field."""

    question: str
    config: SearchConfig
    completion_budget: int | None
    return_tree: bool


def read_request(body: dict, question: str, base: SearchConfig, model_name: str) -> Ask:
    if not question.strip():
        raise Refused(400, "the question is empty", "messages" if "messages" in body else "prompt")
    model = body.get("model")
    if model is not None and model != model_name:
        raise Refused(404, f"model {json.dumps(model)[:80]}: not served here; this server serves "
                           f"{model_name!r} (GET /v1/models)", "model")
    refuse_unsupported(body)
    changes = {key: value for key, value in (("temperature", number(body, "temperature", float)),
                                             ("seed", number(body, "seed", int))) if value is not None}
    try:
        config = base.replace(**changes)
    except ConfigError as exc:
        raise Refused(400, str(exc), next(iter(changes), None)) from None
    budget = number(body, "max_completion_tokens", int)
    budget = number(body, "max_tokens", int) if budget is None else budget
    if budget is not None and budget < 1:
        raise Refused(400, f"max_tokens: expected at least 1, got {budget}", "max_tokens")
    options = body.get("ets") or {}
    if not isinstance(options, dict) or set(options) - {"return_tree"}:
        raise Refused(400, "ets: expected an object whose only key is return_tree (true or false)", "ets")
    if not isinstance(options.get("return_tree", False), bool):
        raise Refused(400, "ets.return_tree: expected true or false", "ets")
    return Ask(question, config, budget, options.get("return_tree", False))


# -- answering it ---------------------------------------------------------------------------------------


async def run_search(ask: Ask, backends: Backends) -> tuple[int, SearchConfig, SearchResult]:
    """The prompt's token count, the config searched with and the search's result (on the search loop)."""
    tokens = await backends.policy.count_tokens(prompt_text(ask.config, ask.question))
    config = ask.config
    if ask.completion_budget is not None:  # lowers the trajectory budget (prompt included), never raises it
        config = config.replace(max_tokens=min(config.max_tokens, tokens + ask.completion_budget))
    why = prompt_overflow(config, tokens, "the question")
    if why:
        raise Refused(400, why, "messages")
    result = await search(ask.question, config, policy=backends.policy, reward=backends.reward,
                          embedder=backends.embedder)
    return tokens, config, result


def describe(ask: Ask, config: SearchConfig, result: SearchResult, setting: Setting, picked: int | None,
             answer: str | None, waited: float) -> dict:
    """Our ``ets`` field of a response."""
    out = {"answer": answer, "picked": picked, "trajectories": len(result.answers), "selection": setting.name,
           "select_method": config.select_method, "width": config.width, "waited": round(waited, 3),
           "stats": result.stats.to_dict()}
    if ask.return_tree:
        out["tree"] = result.tree.to_dicts()
    return out


def add_error_handlers(app) -> None:
    """Errors in OpenAI's shape (:func:`error_body`): :class:`Refused`, and FastAPI's own (read_body's 413,
    an unknown path's 404)."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Refused)
    async def refused(request, exc: Refused):
        return JSONResponse(error_body(exc.status, str(exc), exc.param), status_code=exc.status)


def create_app(backends: Backends, config: SearchConfig, *, setting: Setting | None = None,
               model_name: str = DEFAULT_MODEL_NAME, token: str | None = None,
               max_body_bytes: int = int(MAX_BODY_MB * 2**20), max_waiting: int = MAX_WAITING,
               timeout: float = DEFAULT_TIMEOUT, searcher: ScoringThread | None = None):
    """A FastAPI app answering OpenAI requests with searches on ``backends`` by ``config``.

    ``searcher``: the thread whose event loop the searches run on (the backends must have been started
    there); none: one of its own, made when the app starts. ``token``: what /health says back."""
    from fastapi import FastAPI, HTTPException, Request

    setting = setting or setting_from("majority_vote", True, "last")
    model_type = model_type_of(config.to_dict())
    own = searcher is None

    @asynccontextmanager
    async def lifespan(app):
        app.state.searcher = ScoringThread("ets-search") if own else searcher
        yield
        if own:
            app.state.searcher.close()

    app = FastAPI(title="ets search server", version=__version__, lifespan=lifespan)
    add_common_routes(app, model_name, {
        "server": "ets-search", "model": model_name, "version": __version__, "config": config.to_dict(),
        "selection": setting.name, "backends": backends.description, "max_searches": config.num_threads,
        "max_waiting": max_waiting, "timeout": timeout}, token)
    gate = asyncio.Semaphore(config.num_threads)  # searches at once: the key ets run reads the same way
    app.state.waiting = 0
    app.state.searches = 0

    add_error_handlers(app)
    async def answer(request: Request, read_question) -> tuple[dict, dict, str, str]:
        """The search's answer to a request: (its usage, our field, the content, the finish reason)."""
        arrived = time.monotonic()
        body = parse_body(await read_body(request, max_body_bytes, advice="send one question a request"))
        ask = read_request(body, read_question(body), config, model_name)
        if gate.locked() and app.state.waiting >= max_waiting:
            raise Refused(503, f"busy: {config.num_threads} searches are running and {app.state.waiting} waiting; "
                               "retry later")
        app.state.waiting += 1
        try:
            await asyncio.wait_for(gate.acquire(), timeout)
        except asyncio.TimeoutError:
            raise Refused(504, f"no search slot came free within the server's --timeout of {timeout:g} s "
                               f"({config.num_threads} searches at once); retry later") from None
        finally:
            app.state.waiting -= 1
        waited = time.monotonic() - arrived
        try:
            app.state.searches += 1
            left = max(timeout - waited, 0.001)
            tokens, used, result = await app.state.searcher.run(asyncio.wait_for(run_search(ask, backends), left))
        except asyncio.TimeoutError:
            raise Refused(504, f"the search did not end within the server's --timeout of {timeout:g} s "
                               f"(it waited {waited:.1f} s for a slot): it was stopped") from None
        except (Refused, HTTPException):
            raise
        except BackendError as exc:
            raise Refused(502, f"a model server failed: {exc}") from None
        except Exception as exc:
            raise Refused(500, f"the search failed: {type(exc).__name__}: {exc}") from None
        finally:
            gate.release()
        picked, extracted = await asyncio.to_thread(pick, result, setting, model_type)
        content = "" if picked is None else "".join(result.answers[picked]["steps"]).strip()
        usage = {"prompt_tokens": tokens, "completion_tokens": result.stats.tokens_generated,
                 "total_tokens": tokens + result.stats.tokens_generated}
        ets = describe(ask, used, result, setting, picked, extracted, waited)
        # no finished trajectory: nothing to pick, as a completion cut short by its budget
        return usage, ets, content, "stop" if picked is not None else "length"

    def envelope(kind: str, usage: dict, ets: dict, choice: dict) -> dict:
        prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
        return {"id": f"{prefix}-ets-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
                "model": model_name, "choices": [{"index": 0, "logprobs": None, **choice}], "usage": usage,
                "ets": ets}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        usage, ets, content, finish = await answer(request, question_of_chat)
        return envelope("chat.completion", usage, ets,
                        {"message": {"role": "assistant", "content": content}, "finish_reason": finish})

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        usage, ets, content, finish = await answer(request, question_of_prompt)
        return envelope("text_completion", usage, ets, {"text": content, "finish_reason": finish})

    return app


# -- the process ----------------------------------------------------------------------------------------


def resolve(args: argparse.Namespace) -> tuple[SearchConfig, dict, BackendSpec, Setting]:
    """The config (and the built-in policy's defaults it took), the backends and the answer's selection,
    checked as ``ets run`` checks its own; ConfigError or ValueError for what is wrong."""
    run_args = argparse.Namespace(**vars(args), ray=None, ray_workers=None,
                                  num_samples=None)
    check_path_names([("--config", args.config), ("--reward_model", args.reward_model)])
    config, defaults = resolve_config(run_args)
    if args.width is not None:
        config = config.replace(width=args.width)
    check_flags(run_args, [config.width])
    check_embed_model(config, given=args.embed_model is not None)
    check_budgets([], config)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ConfigError(f"--timeout {args.timeout}: expected a number of seconds > 0")
    if args.max_waiting < 0:
        raise ConfigError(f"--max-waiting {args.max_waiting}: expected a number >= 0")
    if not (math.isfinite(args.max_body_mb) and args.max_body_mb > 0):
        raise ConfigError(f"--max-body-mb {args.max_body_mb}: expected a number of megabytes > 0")
    return config, defaults, BackendSpec.from_args(run_args), setting_from(args.agg_func, args.weighted,
                                                                             args.weight_agg)


def main(argv_: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ets.serve.search_server", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv_)
    log = lambda message: print(f"{WHO}: {message}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        sock = bind(args.host, args.port)  # before the models load: a port in use is said at once
        config, defaults, spec, setting = resolve(args)
    except StartError as exc:
        return failed(str(exc), exc.code, WHO)
    except (ConfigError, ValueError) as exc:
        return failed(str(exc), 2, WHO)
    if defaults:
        log(defaults_line(config, defaults))
    searcher = ScoringThread("ets-search")
    try:
        try:
            backends = build_backends(spec, config, log=log)
            searcher.wait(backends.start())  # servers that do not answer, or serve another model: said now
        except (BackendError, ConfigError, ImportError, OSError) as exc:
            return failed(f"cannot start the models: {exc}", 1, WHO)
        url = f"http://{args.host}:{args.port}"
        app = create_app(backends, config, setting=setting, model_name=args.served_model_name,
                         token=os.environ.get(TOKEN_ENV) or None, max_body_bytes=int(args.max_body_mb * 2**20),
                         max_waiting=args.max_waiting, timeout=args.timeout, searcher=searcher)
        run_app(app, sock, log_level=args.log_level, on_ready=lambda: print(f"{WHO} ready at {url}", flush=True))
        searcher.wait(backends.aclose(), timeout=10)
        return 0
    finally:
        searcher.close()


if __name__ == "__main__":
    sys.exit(main())
