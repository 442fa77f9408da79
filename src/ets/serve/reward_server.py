"""``ets serve reward``: an HTTP PRM server around any in-process Reward.

The JSON API (what :class:`ets.backends.http.reward.EtsReward` speaks):

* ``GET /health`` -> ``{"status": "ok"}`` (and ``"token"``, when started with one: how ``ets serve``
  knows the server answering is the one it started)
* ``GET /info`` -> ``{"server": "ets-reward", "model": NAME, "reward_model_type": TYPE, "version": V}``
* ``GET /v1/models`` -> ``{"object": "list", "data": [{"id": NAME, "object": "model", "owned_by": "ets"}]}``
* ``POST /score`` ``{"contexts": [{"question": Q, "prompt": P, "steps": [S1, S2, ...]}, ...]}``
  -> ``{"model": NAME, "scores": [score of the last step of each context, or null]}``

Requests are scored one batch at a time (an in-process llama.cpp model is not
re-entrant), in a thread of their own, so ``/health`` answers while a batch is
scored; concurrent requests queue, at most ``MAX_WAITING`` (then 503). What the
client must change is a 4xx, never retried: a body over ``--max-body-mb`` (413),
more than ``MAX_CONTEXTS`` contexts (413), a malformed request (422), a text the
PRM cannot read, such as a number of thousands of digits or parentheses nested
hundreds deep (422, naming the context). A 5xx is the PRM failing. Binds
127.0.0.1 unless told otherwise.

Run it: ``ets serve reward [--model PRM.gguf] [--port 8012]``, or
``python -m ets.serve.reward_server --port 8012`` (same flags).
"""

import argparse
import asyncio
import math
import os
import socket
import sys
import threading
from contextlib import asynccontextmanager
from typing import Any, Callable

from ets import __version__
from ets.backends.arithmetic import ArithmeticPRM
from ets.backends.base import BackendError, Context, Reward
from ets.backends.llamacpp import DEFAULT_FORMAT, TokenLogitPRM  # llama_cpp itself loads with the first model
from ets.models import BUILTIN_POLICIES

MAX_CONTEXTS = 1024  # per request
# 4 KB for each of MAX_CONTEXTS contexts (our client sends 16 a request): a body beyond is a mistake, and
# reading and scoring it would hold the PRM for seconds
MAX_BODY_MB = 4.0
MAX_WAITING = 64  # requests queued for the PRM beyond which the server is busy (503: the client retries later)
PRM_MODES = ("arithmetic", "judge", "step_tag", "rlhflow")
TOKEN_ENV = "ETS_SERVE_TOKEN"  # set by `ets serve`: /health says it back
REASON_ENV = "ETS_SERVE_REASON"  # set by `ets serve`: a file where a start that fails writes why, in one line


class Unreadable(Exception):
    """A context the PRM cannot read (its text, not the PRM, is at fault)."""

    def __init__(self, index: int, why: str, exc: BaseException) -> None:
        super().__init__(f"contexts[{index}]: the PRM cannot read it: {why} ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})")


def unreadable(exc: BaseException) -> str | None:
    """Why a PRM's exception means a text it cannot read rather than a PRM that is broken; None if it does not.
    Python's own limits: recursion (parentheses nested deeper than a parser recurses), int() of more than
    4300 digits, a float overflowing."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, OverflowError):
        return "a number too large"
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return "a number with too many digits"
    return None


async def score_or_culprit(reward: Reward, contexts: list[Context]) -> list[float | None]:
    """``reward.score(contexts)``; when that fails on a text the PRM cannot read, :class:`Unreadable`
    naming the first context that fails alone."""
    try:
        return await reward.score(contexts)
    except Exception as exc:
        if unreadable(exc) is None:
            raise
        for index, context in enumerate(contexts):
            try:
                await reward.score([context])
            except Exception as alone:
                why = unreadable(alone)
                if why is not None:
                    raise Unreadable(index, why, alone) from alone
        raise


class ScoringThread:
    """One thread with its own event loop where the PRM scores. The PRM's work (pure Python for the
    arithmetic PRM) then never holds the server's loop, so /health answers during a long batch; one
    thread, so at most one batch at a time, as an in-process model needs."""

    def __init__(self, name: str = "ets-prm-scoring") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    async def run(self, coro) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def wait(self, coro, timeout: float | None = None) -> Any:
        """``coro``'s result, run on the thread's loop, for a caller outside any event loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


async def read_body(request, limit: int, advice: str = "send fewer contexts a request") -> bytes:
    """The request's body, refused (413) as soon as it is known to be over ``limit`` bytes;
    ``advice``: what the client can do about it."""
    from fastapi import HTTPException

    def too_large(size: str) -> HTTPException:
        return HTTPException(status_code=413, detail=f"the request body is {size} bytes, over the server's "
                                                     f"limit of {limit} (--max-body-mb): {advice}")

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(declared)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"more than {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def add_common_routes(app, model_name: str, info: dict[str, Any] | Callable[[], dict[str, Any]],
                      token: str | None) -> None:
    """What every server of ours answers: ``GET /health`` (with ``token``, when given: how ``ets serve``
    knows the server answering is the one it started), ``GET /info`` (``info``, or what ``info()`` says
    now) and ``GET /v1/models``."""

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", **({"token": token} if token else {})}

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        return info() if callable(info) else info

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "ets"}]}


def create_app(reward: Reward, *, model_name: str = "ets-prm", reward_model_type: str = "",
               max_contexts: int = MAX_CONTEXTS, max_body_bytes: int = int(MAX_BODY_MB * 2**20),
               max_waiting: int = MAX_WAITING, token: str | None = None, on_ready=None):
    """A FastAPI app serving ``reward`` (any object with ``async score(contexts)``);
    ``on_ready()`` is called once the app has started; ``token``: what /health says back."""
    # the server's own dependencies (the "serve" extra) load only when a server is made
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from pydantic import BaseModel, Field, ValidationError

    @asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        yield
        if app.state.scorer is not None:
            app.state.scorer.close()

    class ContextIn(BaseModel):
        question: str
        prompt: str
        steps: list[str] = Field(default_factory=list)

    class ScoreRequest(BaseModel):
        contexts: list[ContextIn]

    app = FastAPI(title="ets reward server", version=__version__, lifespan=lifespan)
    lock = asyncio.Lock()
    add_common_routes(app, model_name, {"server": "ets-reward", "model": model_name,
                                        "reward_model_type": reward_model_type, "version": __version__}, token)
    app.state.reward = reward
    app.state.requests = 0
    app.state.waiting = 0
    app.state.scorer = None

    @app.post("/score")
    async def score(request: Request) -> dict[str, Any]:
        # read by hand, not as a parameter: a body over the limit is refused before it is all read
        try:
            req = ScoreRequest.model_validate_json(await read_body(request, max_body_bytes))
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        if len(req.contexts) > max_contexts:
            raise HTTPException(status_code=413, detail=f"at most {max_contexts} contexts per request")
        contexts = [Context(c.question, c.prompt, tuple(c.steps)) for c in req.contexts]
        if app.state.waiting >= max_waiting:
            raise HTTPException(status_code=503, detail=f"busy: {app.state.waiting} requests are waiting for the PRM")
        app.state.requests += 1
        app.state.waiting += 1
        try:
            async with lock:
                if app.state.scorer is None:
                    app.state.scorer = ScoringThread()
                scores = await app.state.scorer.run(score_or_culprit(reward, contexts))
        except Unreadable as exc:  # the client must change the text: a 4xx, which it does not retry
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except Exception as exc:  # the client retries 5xx; say what broke
            raise HTTPException(status_code=500, detail=f"reward model failed: {type(exc).__name__}: {exc}")
        finally:
            app.state.waiting -= 1
        if len(scores) != len(contexts):
            raise HTTPException(status_code=500, detail=f"reward model gave {len(scores)} scores "
                                                        f"for {len(contexts)} contexts")
        out = [None if s is None or not math.isfinite(float(s)) else float(s) for s in scores]
        return {"model": model_name, "scores": out}

    return app


def builtin_reward(model_path: str | None = None, *, prompt_format: str | None = None,
                   mode: str | None = None, policy: str | None = None) -> tuple[Reward, str]:
    """An in-process PRM and its display name.

    No model and no mode, or ``mode="arithmetic"``: the model-free arithmetic PRM (the CPU
    default, :mod:`ets.backends.arithmetic`). Otherwise the token-logit PRM on llama.cpp:
    ``mode`` (judge, step_tag, rlhflow) and ``prompt_format`` are those of
    :class:`ets.backends.llamacpp.TokenLogitPRM`; ``judge`` with no model is the small
    instruct model answering Yes/No about its own steps. ``policy`` (a built-in policy's name): the
    arithmetic PRM with the weights fitted to its work, or the judge that model is.
    """
    if mode == "arithmetic" or (mode is None and model_path is None):
        if model_path is not None:
            raise ValueError("the arithmetic PRM reads no model: drop --model, or choose another --prm-mode")
        return ArithmeticPRM.for_policy(policy), "arithmetic"
    kwargs = {"format": prompt_format or DEFAULT_FORMAT}
    if mode is not None or model_path is None:
        kwargs["mode"] = mode or "judge"
    reward = TokenLogitPRM(model_path or policy, **kwargs)
    path = reward.model_path or model_path or "builtin"
    return reward, str(path).rstrip("/").split("/")[-1]


class StartError(Exception):
    """The server cannot start; ``code`` is the exit status (2: what was asked is wrong, 1: a failure)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening: no client waits on it while a model loads),
    or StartError saying why not: a port out of range, a host that is not this machine's, a port in use."""
    if not 1 <= port <= 65535:
        raise StartError(f"--port {port}: a port is a number from 1 to 65535", 2)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise StartError(f"--host {host}: not an address or name this machine can listen on "
                         f"({getattr(exc, 'strerror', None) or exc})", 2) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartError(bind_failure(host, port, exc), 2) from None
    return sock


def bind_failure(host: str, port: int, exc: OSError) -> str:
    """What to do about a bind that failed."""
    import errno

    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use (another server?): choose another --port, or stop that server"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host {host}: not an address of this machine; 127.0.0.1 (this machine only) or 0.0.0.0 (every one)"
    if exc.errno == errno.EACCES:
        return f"port {port} on {host}: permission denied (ports below 1024 need root): choose another --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def serve(reward: Reward, *, host: str = "127.0.0.1", port: int = 8012, model_name: str = "ets-prm",
          reward_model_type: str = "", log_level: str = "warning", on_ready=None, token: str | None = None,
          max_body_bytes: int = int(MAX_BODY_MB * 2**20), sock: socket.socket | None = None) -> None:
    """Run the server in the foreground until interrupted; ``on_ready()`` once it accepts requests.
    ``sock``: a socket :func:`bind` made (otherwise one is bound to ``host:port`` here)."""
    sock = sock or bind(host, port)
    app = create_app(reward, model_name=model_name, reward_model_type=reward_model_type, token=token,
                     max_body_bytes=max_body_bytes)
    run_app(app, sock, log_level=log_level, on_ready=on_ready)


def run_app(app, sock: socket.socket, *, log_level: str = "warning", on_ready=None) -> None:
    """Serve ``app`` on ``sock`` (from :func:`bind`) in the foreground until interrupted; ``on_ready()``
    once it accepts requests."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:  # listening now: ready is the truth
                on_ready()

    Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="PRM model file (GGUF); default: the arithmetic PRM (no model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8012)
    parser.add_argument("--served-model-name", dest="served_model_name", default=None,
                        help="model name the server reports (default: the model file's name)")
    parser.add_argument("--prompt-format", dest="prompt_format", default=None,
                        help="prompt format of the policy whose steps are scored (default: the CPU models' format)")
    parser.add_argument("--prm-mode", dest="prm_mode", choices=PRM_MODES, default=None,
                        help="how the PRM reads a step: arithmetic (model-free equation checks, the default "
                             "with no --model), judge (Yes/No self-evaluation), "
                             "step_tag (math-shepherd '+'/'-' at the tag), rlhflow (Llama-3 chat '+'/'-')")
    parser.add_argument("--policy", default=None, choices=list(BUILTIN_POLICIES),
                        help="the built-in policy whose steps are scored: the arithmetic PRM's weights fitted to "
                             "its work, or the judge model (default: smollm2-135m)")
    parser.add_argument("--max-body-mb", dest="max_body_mb", type=float, default=MAX_BODY_MB,
                        help=f"largest request body in MB; a larger one is refused with 413 (default {MAX_BODY_MB:g})")
    parser.add_argument("--log-level", dest="log_level", default="warning")


def failed(message: str, code: int, who: str = "ets reward server") -> int:
    """A start that fails: one line, where ``ets serve`` reads it (REASON_ENV), else on stderr after ``who``."""
    where = os.environ.get(REASON_ENV)
    try:
        if where:
            with open(where, "w", encoding="utf-8") as fh:
                fh.write(message)
            return code
    except OSError:
        pass
    print(f"{who}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ets.serve.reward_server", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not (math.isfinite(args.max_body_mb) and args.max_body_mb > 0):
        return failed(f"--max-body-mb {args.max_body_mb}: expected a number of megabytes > 0", 2)
    try:
        sock = bind(args.host, args.port)  # before the model loads: a port in use is said at once
        reward, name = builtin_reward(args.model, prompt_format=args.prompt_format, mode=args.prm_mode,
                                      policy=args.policy)
    except StartError as exc:
        return failed(str(exc), exc.code)
    except ValueError as exc:
        return failed(str(exc), 2)
    except BackendError as exc:  # a model file that is not there, or does not load
        return failed(f"cannot load the PRM: {exc}", 1)
    url = f"http://{args.host}:{args.port}"
    serve(reward, host=args.host, port=args.port, model_name=args.served_model_name or name,
          reward_model_type=reward.mode, log_level=args.log_level, token=os.environ.get(TOKEN_ENV) or None,
          max_body_bytes=int(args.max_body_mb * 2**20), sock=sock,
          on_ready=lambda: print(f"ets reward server ready at {url}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
