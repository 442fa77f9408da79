"""``ets serve policy|reward``: start an inference server, wait until it answers, print its URL
(``ets serve search``, the search itself behind an OpenAI endpoint, is :mod:`ets.serve.search_server`).

Engines: ``vllm`` (``python -m vllm.entrypoints.openai.api_server``),
``sglang`` (``python -m sglang.launch_server``), ``llamacpp``
(llama-cpp-python's ``python -m llama_cpp.server``, one request at a time) and ``ets``
(ours: :mod:`ets.serve.policy_server`, the in-process llama.cpp policy batching every request
in flight; :mod:`ets.serve.reward_server` for the PRM). With no ``--model`` the built-in
CPU model is served (``llamacpp`` for the policy, ``ets`` for the PRM).
``--dry-run`` prints the command instead of running it. Arguments after ``--``
go to the engine unchanged. The server binds 127.0.0.1 unless ``--host`` says
otherwise; ``--gpu`` sets ``CUDA_VISIBLE_DEVICES``.

It says ``ready`` only when the process it started answers: the port must be
free before the engine starts, the engine must still run when the answer comes,
and our PRM server's ``/health`` must say back the token it was started with.
A start that fails is one line: exit 2 for what was asked wrong (a port out of
range or in use, a host that is not this machine's, a model file that is not
there), 1 for a server that fails or does not answer in ``--wait`` seconds;
130 for Ctrl-C and 143 for SIGTERM, which stop the engine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ets.backends.llamacpp.weights import resolve_policy_model
from ets.backends.prm_families import FAMILIES, vllm_classifier_overrides
from ets.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, CommandError
from ets.models import BUILTIN_POLICIES
from ets.serve import search_server
from ets.serve.reward_server import PRM_MODES, REASON_ENV, TOKEN_ENV, StartError, bind

POLICY_ENGINES = ("llamacpp", "ets", "vllm", "sglang")
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
                            f"built-in policy (llamacpp, ets: {', '.join(BUILTIN_POLICIES)}); default: the built-in CPU model")
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        p.add_argument("--port", type=int, default=DEFAULT_PORTS[role], help=f"port (default {DEFAULT_PORTS[role]})")
        p.add_argument("--gpu", default=None, help="GPU index(es) for CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1")
        p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (vllm, sglang)")
        p.add_argument("--mem-fraction", dest="mem_fraction", type=float, default=None,
                       help="GPU memory fraction for the engine (vllm --gpu-memory-utilization, "
                            "sglang --mem-fraction-static); leave room for a colocated embedder")
        p.add_argument("--served-model-name", dest="served_model_name", default=None,
                       help="name the server reports in /v1/models (what --policy_model / --reward_model check)")
        p.add_argument("--python", default=None, metavar="PATH",
                       help="the Python that runs the engine, e.g. a virtualenv's bin/python where vLLM or SGLang "
                            "is installed (default: this ets's own Python)")
        if role == "reward":
            p.add_argument("--prompt-format", dest="prompt_format", default=None,
                           help="ets engine: prompt format of the policy whose steps are scored")
            p.add_argument("--prm-mode", dest="prm_mode", choices=(*PRM_MODES, VLLM_HEAD), default=None,
                           help="ets engine: arithmetic (model-free, the default with no --model), "
                                "judge (Yes/No self-evaluation), step_tag (math-shepherd), rlhflow; vllm engine: "
                                "step_tag, rlhflow or judge serve a causal LM as a classifier of its family's "
                                f"tokens, {VLLM_HEAD} a model's own classification head (default: from the model)")
            p.add_argument("--policy", default=None, choices=list(BUILTIN_POLICIES),
                           help="ets engine: the built-in policy whose steps are scored (arithmetic: the weights "
                                "fitted to its work; judge: it judges) (default: smollm2-135m)")
        p.add_argument("--n-ctx", dest="n_ctx", type=int, default=None,
                       help="context length (llamacpp: default 4096; ets policy: the KV cache all requests "
                            "share, default 8192)")
        p.add_argument("--wait", type=float, default=900.0, help="seconds to wait for the server to answer")
        p.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the command and exit")
        p.add_argument("engine_args", nargs=argparse.REMAINDER, help="after --: arguments for the engine")
        p.set_defaults(func=run, role=role)
    # the search behind an OpenAI endpoint: our own server (engine ets), with its own flags
    s = roles.add_parser("search", help="serve the search itself (OpenAI /v1/chat/completions)",
                         description=search_server.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    search_server.add_arguments(s)
    s.add_argument("--wait", type=float, default=900.0, help="seconds to wait for the server (and its models)")
    s.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the command and exit")
    s.set_defaults(func=run, role="search", engine="ets", model=None, gpu=None, engine_args=[])
    serve.set_defaults(func=lambda args: (serve.print_help(), 2)[1])


def _llamacpp_policy_model(model: str | None) -> str:
    """A GGUF path for llama.cpp's server: the given path, a built-in policy's name, or the default built-in policy."""
    return str(resolve_policy_model(model))


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The engine's command line and the environment it adds."""
    py = getattr(args, "python", None) or sys.executable
    role, engine, model = args.role, args.engine, args.model
    extra = list(args.engine_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    env: dict[str, str] = {}
    if args.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if engine in ("vllm", "sglang") and not model:
        raise CommandError(f"{role} --engine {engine} needs --model (a Hugging Face id or a local path)", 2)
    if getattr(args, "prm_mode", None) == VLLM_HEAD and engine != "vllm":
        raise CommandError(f"--prm-mode {VLLM_HEAD} is for --engine vllm (a model's own classification head)", 2)
    if engine == "vllm":
        cmd = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--host", args.host, "--port", str(args.port)]
        if role == "policy":  # the search's shared prefixes cached, and each answer saying how many were
            cmd += ["--enable-prefix-caching", "--enable-prompt-tokens-details"]
        else:
            cmd += vllm_reward_flags(model, getattr(args, "prm_mode", None))
        if args.tp != 1:
            cmd += ["--tensor-parallel-size", str(args.tp)]
        if args.mem_fraction is not None:
            cmd += ["--gpu-memory-utilization", str(args.mem_fraction)]
        if args.served_model_name:
            cmd += ["--served-model-name", args.served_model_name]
    elif engine == "sglang":
        cmd = [py, "-m", "sglang.launch_server", "--model-path", model,
               "--host", args.host, "--port", str(args.port), "--trust-remote-code"]
        if role == "policy":  # the radix cache is on by default; its answers say what it served only with this,
            cmd += ["--enable-cache-report", "--enable-metrics"]  # and /metrics has its counters only with that
        if args.tp != 1:
            cmd += ["--tp-size", str(args.tp)]
        if args.mem_fraction is not None:
            cmd += ["--mem-fraction-static", str(args.mem_fraction)]
        if args.served_model_name:
            cmd += ["--served-model-name", args.served_model_name]
    elif engine == "llamacpp":
        cmd = [py, "-m", "llama_cpp.server", "--model", _llamacpp_policy_model(model),
               "--host", args.host, "--port", str(args.port), "--n_ctx", str(args.n_ctx or 4096)]
        if args.served_model_name:
            cmd += ["--model_alias", args.served_model_name]
    elif engine == "ets" and role == "policy":
        cmd = [py, "-m", "ets.serve.policy_server", "--host", args.host, "--port", str(args.port)]
        for flag, value in (("--model", model), ("--served-model-name", args.served_model_name),
                            ("--n-ctx", args.n_ctx)):
            if value:
                cmd += [flag, str(value)]
    elif role == "search":
        cmd = [py, "-m", "ets.serve.search_server", *search_server.argv(args)]
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


VLLM_HEAD = "head"  # --prm-mode for vLLM: the model's own classification head (Qwen2.5-Math-PRM)


def model_architecture(model: str) -> str | None:
    """The ``architectures[0]`` of a model's ``config.json``: a local folder's, or a Hugging Face id's when
    it is in the local hub cache (never downloaded); None when not found."""
    config: Path | None = Path(model) / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "config.json")
            config = Path(found) if isinstance(found, str) else None
        except Exception:  # not installed, or not an id: the name decides
            config = None
    try:
        names = json.loads(config.read_text(encoding="utf-8")).get("architectures") if config else None
    except (OSError, ValueError, AttributeError):
        return None
    return str(names[0]) if isinstance(names, list) and names else None


def vllm_prm_mode(model: str, prm_mode: str | None) -> str:
    """How vLLM serves a PRM: ``--prm-mode`` when given; else a causal LM reads its family's tokens
    (RLHFlow's for a model named so, math-shepherd's step tag otherwise), and a model with a head of its
    own (a Qwen2.5-Math-PRM, or any architecture not ``*ForCausalLM``) is served as it is."""
    if prm_mode == "arithmetic":
        raise CommandError("--prm-mode arithmetic needs no model server: use --engine ets", 2)
    if prm_mode:
        return prm_mode
    arch, name = model_architecture(model), model.lower()
    if (arch is not None and not arch.endswith("ForCausalLM")) or (arch is None and "math-prm" in name):
        return VLLM_HEAD
    return "rlhflow" if "rlhflow" in name else "step_tag"


def vllm_reward_flags(model: str, prm_mode: str | None) -> list[str]:
    """vLLM's flags for a PRM: a token-logit PRM (a causal LM) becomes a two-class classifier of its
    family's bad and good tokens, which ``/pooling`` answers with [p(bad), p(good)]."""
    mode = vllm_prm_mode(model, prm_mode)
    if mode == VLLM_HEAD:
        return ["--trust-remote-code"]
    overrides = vllm_classifier_overrides(FAMILIES[mode])
    return ["--trust-remote-code", "--runner", "pooling", "--convert", "classify",
            "--hf-overrides", json.dumps(overrides, separators=(",", ":"))]


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


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float, path: str = "/v1/models",
               ours: Callable[[object], bool] | None = None) -> None:
    """Poll ``url + path`` until it answers 200, while ``proc`` runs; raise when the process exits or time
    runs out. ``ours(answer)``: whether a 200 comes from the server started (another one may hold the port)."""
    import httpx

    def exited() -> RuntimeError:
        return RuntimeError(f"the server exited with code {proc.returncode} before answering at {url}")

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise exited()
        try:
            r = httpx.get(url + path, timeout=2.0, trust_env=False)
            if r.status_code == 200 and (ours is None or ours(r)):
                if proc is not None and proc.poll() is not None:  # the answer was another process's
                    raise exited()
                return
            last = f"HTTP {r.status_code}" if r.status_code != 200 else "another server answered"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise TimeoutError(f"the server did not answer at {url}{path} within {timeout:g}s ({last})")


def says_token(token: str) -> Callable[[object], bool]:
    """Whether a /health answer says back ``token``: our PRM server, the one started, answers."""
    def ours(response) -> bool:
        try:
            return response.json().get("token") == token
        except (ValueError, AttributeError):
            return False
    return ours


ENGINE_MODULES = {
    "vllm": ("vllm", "vLLM", "pip install vllm"),
    "sglang": ("sglang", "SGLang", 'pip install "sglang[all]"'),
    "llamacpp": ("llama_cpp.server", "llama-cpp-python's server", 'pip install "llama-cpp-python[server]"'),
    "ets": ("fastapi", "the ets reward server (FastAPI, uvicorn)", 'pip install "ets[serve]"'),
}


def missing_engine(engine: str, python: str | None = None) -> str | None:
    """A message when the engine's Python package is not importable here (or by ``python``), else None."""
    module, name, hint = ENGINE_MODULES[engine]
    modules = [module] + (["uvicorn"] if engine == "ets" else [])
    if python:  # another environment's Python: asked without importing the engine (vLLM takes seconds)
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            return f"--python {python}: no such executable; give the bin/python of the engine's environment"
        probe = ("import importlib.util as u, sys\n"
                 "def has(m):\n try: return u.find_spec(m) is not None\n except ModuleNotFoundError: return False\n"
                 "sys.exit(0 if all(has(m) for m in sys.argv[1:]) else 3)")
        try:
            found = subprocess.run([python, "-c", probe, *modules], capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"--python {python} does not run: {exc}"
        return None if found else f"{name} is not installed in {python}: {hint} there"
    found = True
    for m in modules:
        try:
            found = found and importlib.util.find_spec(m) is not None
        except ModuleNotFoundError:
            found = False
    return None if found else f"{name} is not installed in {sys.executable}: {hint}, or pass --python PATH"


def check_request(args: argparse.Namespace) -> None:
    """What can be refused before the engine starts, as CommandError (exit 2; 1 for an engine not installed)."""
    if not 1 <= args.port <= 65535:
        raise CommandError(f"--port {args.port}: a port is a number from 1 to 65535", 2)
    if not (math.isfinite(args.wait) and args.wait > 0):
        raise CommandError(f"--wait {args.wait}: expected a number of seconds > 0", 2)
    model = args.model
    if args.engine in ("ets", "llamacpp") and model and model not in BUILTIN_POLICIES and not Path(model).is_file():
        raise CommandError(f"--model {model}: no such file; expected a GGUF file or a built-in policy "
                           f"({', '.join(BUILTIN_POLICIES)})", 2)
    problem = missing_engine(args.engine, getattr(args, "python", None))
    if problem:
        raise CommandError(problem, 1)
    try:  # the port free and the host this machine's: otherwise another server could answer the readiness check
        bind(args.host, args.port).close()
    except StartError as exc:
        raise CommandError(str(exc), exc.code) from None


def run(args: argparse.Namespace) -> int:
    cmd, env = build_command(args)
    if args.dry_run:
        print(format_command(cmd, env))
        return 0
    check_request(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"ets serve: warning: binding {args.host}: the server is reachable from other machines",
              file=sys.stderr)
    url = url_for(args.host, args.port)
    ours = None
    if args.engine == "ets":  # our server says back a token only this command knows
        token = secrets.token_hex(16)
        env_run = {**env, TOKEN_ENV: token}
        ours = says_token(token)
    else:
        env_run = env
    fd, reason_path = tempfile.mkstemp(prefix="ets-serve-reason.")
    os.close(fd)
    reason = Path(reason_path)
    try:
        return _supervise(args, cmd, env, {**os.environ, **env_run, REASON_ENV: reason_path}, url, ours, reason)
    finally:
        reason.unlink(missing_ok=True)


def _supervise(args, cmd, env, full_env, url, ours, reason: Path) -> int:
    print(f"ets serve: starting {args.role} server: {format_command(cmd, env)}", file=sys.stderr, flush=True)
    # the engine's output goes to stderr: stdout carries the URL only, for scripts
    proc = subprocess.Popen(cmd, env=full_env, stdout=sys.stderr.fileno())

    received: list[int] = []  # SIGTERM / SIGINT: the user stops the server
    asked: list[float] = []  # when the engine was asked to stop

    def stop() -> None:
        if not asked:
            asked.append(time.monotonic())
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def on_signal(signum, frame):
        # no waiting here: the main thread may be inside proc.wait(); just pass the signal on
        received.append(signum)
        stop()

    def finish(grace: float = 15.0) -> int:
        """Wait for the engine to exit; after ``grace`` seconds of a stop request, kill it."""
        while True:
            try:
                return proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                if asked and time.monotonic() - asked[0] > grace:
                    proc.kill()

    def stopped() -> int:
        return EXIT_INTERRUPTED if received[0] == signal.SIGINT else EXIT_TERMINATED

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            wait_ready(url, proc, args.wait, ready_path(args.engine), ours=ours)
        except (RuntimeError, TimeoutError) as exc:
            if received:
                finish()
                return stopped()
            stop()  # a failure, not a stop the user asked for: the exit status says which
            code = finish()
            said = reason.read_text(encoding="utf-8", errors="replace").strip() if reason.exists() else ""
            if said:  # our server said why it could not start: that line, not its exit code
                raise CommandError(said, 2 if code == 2 else 1) from None
            more = "; its output is above" if isinstance(exc, RuntimeError) else ""
            raise CommandError(f"{args.role} server ({args.engine}): {exc}{more}", 1) from None
        print(f"ets serve: {args.role} server ({args.engine}) ready at {url}", file=sys.stderr, flush=True)
        print(url, flush=True)
        code = finish()
        if received:
            return stopped()
        if code != 0:
            raise CommandError(f"{args.role} server ({args.engine}) at {url} exited with code {code}; "
                               "its output is above", 1)
        return 0
    finally:
        if proc.poll() is None:
            stop()
            finish(grace=5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
