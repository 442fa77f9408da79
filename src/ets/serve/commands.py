"""``ets serve policy|reward``: start an inference server, wait until it answers, print its URL.

Engines: ``vllm`` (``python -m vllm.entrypoints.openai.api_server``),
``sglang`` (``python -m sglang.launch_server``), ``llamacpp``
(llama-cpp-python's ``python -m llama_cpp.server``) and, for the PRM, ``ets``
(our server, :mod:`ets.serve.reward_server`). With no ``--model`` the built-in
CPU model is served (``llamacpp`` for the policy, ``ets`` for the PRM).
``--dry-run`` prints the command instead of running it. Arguments after ``--``
go to the engine unchanged. The server binds 127.0.0.1 unless ``--host`` says
otherwise; ``--gpu`` sets ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time

from ets.backends.llamacpp.weights import resolve_policy_model
from ets.models import BUILTIN_POLICIES
from ets.serve.reward_server import PRM_MODES

POLICY_ENGINES = ("llamacpp", "vllm", "sglang")
REWARD_ENGINES = ("ets", "sglang", "vllm")
DEFAULT_PORTS = {"policy": 8011, "reward": 8012}


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", help="start a policy or PRM server (vLLM, SGLang, llama.cpp, or ours)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = serve.add_subparsers(dest="role", metavar="ROLE")
    for role, engines, default_engine in (("policy", POLICY_ENGINES, "llamacpp"), ("reward", REWARD_ENGINES, "ets")):
        p = roles.add_parser(role, help=f"serve the {'policy (OpenAI /v1/completions)' if role == 'policy' else 'PRM'}")
        p.add_argument("--engine", choices=engines, default=default_engine,
                       help=f"inference server to start (default {default_engine})")
        p.add_argument("--model", default=None,
                       help="model: a Hugging Face id or path (vllm, sglang), a GGUF file (llamacpp, ets) or a "
                            f"built-in policy (llamacpp: {', '.join(BUILTIN_POLICIES)}); default: the built-in CPU model")
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        p.add_argument("--port", type=int, default=DEFAULT_PORTS[role], help=f"port (default {DEFAULT_PORTS[role]})")
        p.add_argument("--gpu", default=None, help="GPU index(es) for CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1")
        p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (vllm, sglang)")
        p.add_argument("--mem-fraction", dest="mem_fraction", type=float, default=None,
                       help="GPU memory fraction for the engine (vllm --gpu-memory-utilization, "
                            "sglang --mem-fraction-static); leave room for a colocated embedder")
        p.add_argument("--served-model-name", dest="served_model_name", default=None,
                       help="name the server reports in /v1/models (what --policy_model / --reward_model check)")
        if role == "reward":
            p.add_argument("--prompt-format", dest="prompt_format", default=None,
                           help="ets engine: prompt format of the policy whose steps are scored")
            p.add_argument("--prm-mode", dest="prm_mode", choices=PRM_MODES, default=None,
                           help="ets engine: arithmetic (model-free, the default with no --model), "
                                "judge (Yes/No self-evaluation), step_tag (math-shepherd), rlhflow")
            p.add_argument("--policy", default=None, choices=list(BUILTIN_POLICIES),
                           help="ets engine: the built-in policy whose steps are scored (arithmetic: the weights "
                                "fitted to its work; judge: it judges) (default: smollm2-135m)")
        p.add_argument("--n-ctx", dest="n_ctx", type=int, default=4096, help="context length (llamacpp)")
        p.add_argument("--wait", type=float, default=900.0, help="seconds to wait for the server to answer")
        p.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the command and exit")
        p.add_argument("engine_args", nargs=argparse.REMAINDER, help="after --: arguments for the engine")
        p.set_defaults(func=run, role=role)
    serve.set_defaults(func=lambda args: (serve.print_help(), 2)[1])


def _llamacpp_policy_model(model: str | None) -> str:
    """A GGUF path for llama.cpp's server: the given path, a built-in policy's name, or the default built-in policy."""
    return str(resolve_policy_model(model))


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The engine's command line and the environment it adds."""
    py = sys.executable
    role, engine, model = args.role, args.engine, args.model
    extra = list(args.engine_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    env: dict[str, str] = {}
    if args.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if engine in ("vllm", "sglang") and not model:
        raise SystemExit(f"ets serve {role} --engine {engine} needs --model (a Hugging Face id or a local path)")
    if engine == "vllm":
        cmd = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--host", args.host, "--port", str(args.port)]
        if role == "policy":
            cmd += ["--enable-prefix-caching"]
        else:
            cmd += ["--trust-remote-code"]
        if args.tp != 1:
            cmd += ["--tensor-parallel-size", str(args.tp)]
        if args.mem_fraction is not None:
            cmd += ["--gpu-memory-utilization", str(args.mem_fraction)]
        if args.served_model_name:
            cmd += ["--served-model-name", args.served_model_name]
    elif engine == "sglang":
        cmd = [py, "-m", "sglang.launch_server", "--model-path", model,
               "--host", args.host, "--port", str(args.port), "--trust-remote-code"]
        if args.tp != 1:
            cmd += ["--tp-size", str(args.tp)]
        if args.mem_fraction is not None:
            cmd += ["--mem-fraction-static", str(args.mem_fraction)]
        if args.served_model_name:
            cmd += ["--served-model-name", args.served_model_name]
    elif engine == "llamacpp":
        cmd = [py, "-m", "llama_cpp.server", "--model", _llamacpp_policy_model(model),
               "--host", args.host, "--port", str(args.port), "--n_ctx", str(args.n_ctx)]
        if args.served_model_name:
            cmd += ["--model_alias", args.served_model_name]
    elif engine == "ets":
        cmd = [py, "-m", "ets.serve.reward_server", "--host", args.host, "--port", str(args.port)]
        if model:
            cmd += ["--model", model]
        if args.served_model_name:
            cmd += ["--served-model-name", args.served_model_name]
        if getattr(args, "prompt_format", None):
            cmd += ["--prompt-format", args.prompt_format]
        if getattr(args, "prm_mode", None):
            cmd += ["--prm-mode", args.prm_mode]
        if getattr(args, "policy", None):
            cmd += ["--policy", args.policy]
    else:  # argparse choices keep us from here
        raise SystemExit(f"unknown engine {engine!r}")
    return cmd + extra, env


def ready_path(engine: str) -> str:
    return "/health" if engine == "ets" else "/v1/models"


def format_command(cmd: list[str], env: dict[str, str]) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (prefix + " " if prefix else "") + shlex.join(cmd)


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float, path: str = "/v1/models") -> None:
    """Poll ``url + path`` until it answers 200; raise when the process exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering at {url}")
        try:
            r = httpx.get(url + path, timeout=2.0, trust_env=False)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise TimeoutError(f"the server did not answer at {url}{path} within {timeout:g}s ({last})")


ENGINE_MODULES = {
    "vllm": ("vllm", "vLLM", "pip install vllm"),
    "sglang": ("sglang", "SGLang", 'pip install "sglang[all]"'),
    "llamacpp": ("llama_cpp.server", "llama-cpp-python's server", 'pip install "llama-cpp-python[server]"'),
    "ets": ("fastapi", "the ets reward server (FastAPI, uvicorn)", 'pip install "ets[serve]"'),
}


def missing_engine(engine: str) -> str | None:
    """A message when the engine's Python package is not importable here, else None."""
    module, name, hint = ENGINE_MODULES[engine]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if engine == "ets" and found:
        found = importlib.util.find_spec("uvicorn") is not None
    return None if found else f"{name} is not installed in {sys.executable}: {hint}"


def run(args: argparse.Namespace) -> int:
    cmd, env = build_command(args)
    if args.dry_run:
        print(format_command(cmd, env))
        return 0
    problem = missing_engine(args.engine)
    if problem:
        print(f"ets serve: {problem}", file=sys.stderr)
        return 1
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"ets serve: warning: binding {args.host}: the server is reachable from other machines",
              file=sys.stderr)
    url = url_for(args.host, args.port)
    print(f"ets serve: starting {args.role} server: {format_command(cmd, env)}", file=sys.stderr, flush=True)
    # the engine's output goes to stderr: stdout carries the URL only, for scripts
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=sys.stderr.fileno())

    stopping: list[float] = []  # when SIGTERM / SIGINT arrived

    def on_signal(signum, frame):
        # no waiting here: the main thread may be inside proc.wait(); just pass the signal on
        if not stopping:
            stopping.append(time.monotonic())
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def finish(grace: float = 15.0) -> int:
        """Wait for the engine to exit; after ``grace`` seconds of a stop request, kill it."""
        while True:
            try:
                return proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                if stopping and time.monotonic() - stopping[0] > grace:
                    proc.kill()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            wait_ready(url, proc, args.wait, ready_path(args.engine))
        except (RuntimeError, TimeoutError) as exc:
            if not stopping:
                print(f"ets serve: {exc}", file=sys.stderr)
                on_signal(signal.SIGTERM, None)
            finish()
            return 143 if stopping else 1
        print(f"ets serve: {args.role} server ({args.engine}) ready at {url}", file=sys.stderr, flush=True)
        print(url, flush=True)
        code = finish()
        return 143 if stopping else code
    finally:
        if proc.poll() is None:
            on_signal(signal.SIGTERM, None)
            finish(grace=5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
