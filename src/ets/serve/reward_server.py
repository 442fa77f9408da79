"""``ets serve reward``: an HTTP PRM server around any in-process Reward.

The JSON API (what :class:`ets.backends.http.reward.EtsReward` speaks):

* ``GET /health`` -> ``{"status": "ok"}``
* ``GET /info`` -> ``{"server": "ets-reward", "model": NAME, "reward_model_type": TYPE, "version": V}``
* ``GET /v1/models`` -> ``{"object": "list", "data": [{"id": NAME, "object": "model", "owned_by": "ets"}]}``
* ``POST /score`` ``{"contexts": [{"question": Q, "prompt": P, "steps": [S1, S2, ...]}, ...]}``
  -> ``{"model": NAME, "scores": [score of the last step of each context, or null]}``

Requests are scored one batch at a time (an in-process llama.cpp model is not
re-entrant); concurrent requests queue. Binds 127.0.0.1 unless told otherwise.

Run it: ``ets serve reward [--model PRM.gguf] [--port 8012]``, or
``python -m ets.serve.reward_server --port 8012`` (same flags).
"""

import argparse
import asyncio
import math
import sys
from contextlib import asynccontextmanager
from typing import Any

from ets import __version__
from ets.backends.arithmetic import ArithmeticPRM
from ets.backends.base import Context, Reward
from ets.backends.llamacpp import DEFAULT_FORMAT, TokenLogitPRM  # llama_cpp itself loads with the first model
from ets.models import BUILTIN_POLICIES

MAX_CONTEXTS = 1024  # per request
PRM_MODES = ("arithmetic", "judge", "step_tag", "rlhflow")


def create_app(reward: Reward, *, model_name: str = "ets-prm", reward_model_type: str = "",
               max_contexts: int = MAX_CONTEXTS, on_ready=None):
    """A FastAPI app serving ``reward`` (any object with ``async score(contexts)``);
    ``on_ready()`` is called once the server has started."""
    # the server's own dependencies (the "serve" extra) load only when a server is made
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, Field

    @asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        yield

    class ContextIn(BaseModel):
        question: str
        prompt: str
        steps: list[str] = Field(default_factory=list)

    class ScoreRequest(BaseModel):
        contexts: list[ContextIn]

    app = FastAPI(title="ets reward server", version=__version__, lifespan=lifespan)
    lock = asyncio.Lock()
    info = {"server": "ets-reward", "model": model_name, "reward_model_type": reward_model_type,
            "version": __version__}
    app.state.reward = reward
    app.state.requests = 0

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        return info

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "ets"}]}

    @app.post("/score")
    async def score(req: ScoreRequest) -> dict[str, Any]:
        if len(req.contexts) > max_contexts:
            raise HTTPException(status_code=413, detail=f"at most {max_contexts} contexts per request")
        contexts = [Context(c.question, c.prompt, tuple(c.steps)) for c in req.contexts]
        app.state.requests += 1
        async with lock:
            try:
                scores = await reward.score(contexts)
            except Exception as exc:  # the client retries 5xx; say what broke
                raise HTTPException(status_code=500, detail=f"reward model failed: {type(exc).__name__}: {exc}")
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


def serve(reward: Reward, *, host: str = "127.0.0.1", port: int = 8012, model_name: str = "ets-prm",
          reward_model_type: str = "", log_level: str = "warning", on_ready=None) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    app = create_app(reward, model_name=model_name, reward_model_type=reward_model_type, on_ready=on_ready)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


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
    parser.add_argument("--log-level", dest="log_level", default="warning")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ets.serve.reward_server", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        reward, name = builtin_reward(args.model, prompt_format=args.prompt_format, mode=args.prm_mode,
                                      policy=args.policy)
    except ValueError as exc:
        parser.error(str(exc))
    url = f"http://{args.host}:{args.port}"
    serve(reward, host=args.host, port=args.port, model_name=args.served_model_name or name,
          reward_model_type=reward.mode, log_level=args.log_level, on_ready=lambda: print(f"ets reward server ready at {url}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
