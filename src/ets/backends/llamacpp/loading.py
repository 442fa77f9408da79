"""llama-cpp-python, imported on first use, and the GGUF models it loaded (once per process: the
policy and an in-process PRM on the same file share one model)."""

from __future__ import annotations

import ctypes
import os
import threading

from ets.backends.base import BackendError
from ets.models import BUILTIN_POLICIES, resolve_policy_model

DEFAULT_FORMAT = "small_instruct"  # the prompt format the built-in CPU model runs with

_LOAD_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}  # resolved path -> llama_cpp's LlamaModel
_LOG_CALLBACK = None  # kept referenced: llama.cpp calls it from C


def llama():
    """The ``llama_cpp`` module (imported here, not at start-up: an optional, heavy dependency)."""
    try:
        import llama_cpp
        from llama_cpp import _internals  # noqa: F401 - the low-level model and context classes
    except ImportError as e:  # pragma: no cover - depends on the install
        raise BackendError(
            "llama-cpp-python is not installed; install it with: "
            "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install --no-cache-dir 'llama-cpp-python==0.3.36'",
            where="llama_cpp",
        ) from e
    return llama_cpp


def quiet_llama_logs() -> None:
    """Route llama.cpp's log lines to nowhere (they go to stderr by default)."""
    global _LOG_CALLBACK
    llama_cpp = llama()
    if _LOG_CALLBACK is None:
        @llama_cpp.llama_log_callback
        def _drop(level, text, user_data):  # pragma: no cover - C callback
            return None
        _LOG_CALLBACK = _drop
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def load_model(model_path: str | os.PathLike | None = None):
    """Load a GGUF model once per process (policy and judge share it): a path, a built-in policy's name,
    or the default built-in policy."""
    path = str(resolve_policy_model(model_path).expanduser().resolve())
    if not os.path.isfile(path):
        raise BackendError(f"GGUF model file not found (or a built-in policy: {', '.join(BUILTIN_POLICIES)})", where=path)
    with _LOAD_LOCK:
        model = _MODELS.get(path)
        if model is None:
            model = _MODELS[path] = open_model(path)
    return model


def open_model(path: str | os.PathLike):
    """The GGUF at ``path`` loaded on the CPU, for the caller alone (:func:`load_model` shares one per file)."""
    llama_cpp = llama()
    quiet_llama_logs()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    try:
        # verbose=True: no stdout/stderr redirection (its /dev/null handles leak); the log callback
        # already silences llama.cpp
        return llama_cpp._internals.LlamaModel(path_model=str(path), params=params, verbose=True)
    except ValueError as e:
        raise BackendError(f"llama.cpp could not load the model: {e}", where=str(path)) from e


def default_threads(shared: bool = True) -> int:
    """Threads per llama.cpp context: all cores for a context that decodes alone, half of them
    (at least one) when another context decodes beside it (``shared``: the policy and an
    in-process llama.cpp PRM).

    llama.cpp's threads synchronise hundreds of times per token: with more threads than free
    cores a decode slows down tenfold and more (seen here: 2 threads on a 2-core machine with
    one core busy, 24 ms -> 320 ms a token). Override with ``n_threads`` or ``ETS_LLAMA_THREADS``."""
    env = os.environ.get("ETS_LLAMA_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 2
    return max(1, cores // 2) if shared else cores


def decode_ms(path: str | os.PathLike, *, rows: int, steps: int = 6) -> float:
    """Milliseconds a ``llama_decode`` call of ``rows`` sequences takes with the GGUF at ``path`` on this
    machine (the fastest of ``steps`` calls; the policy's threads): each sequence forked from a short prompt
    and extended by one token a call, as a search's children are. The model is loaded for this alone and freed."""
    import time

    from ets.backends.llamacpp.engine import SlotEngine  # the engine imports this module

    model = open_model(path)
    engine = None
    try:
        engine = SlotEngine(model, n_ctx=512, n_slots=rows + 1, n_threads=default_threads(shared=False))
        prompt = engine.tokenize("Question: A baker sells 12 pies a day for 5 days. How many pies is that?")
        base, *_ = engine.prepare(prompt)
        children = engine.fork(base, rows, {base})
        vocab = min(engine.n_vocab, 20000)
        best = float("inf")
        for step in range(steps):
            # distinct tokens: one row a sequence, as siblings that have parted
            tokens = [(sid, 1000 + (step * rows + i) * 37 % (vocab - 1000)) for i, sid in enumerate(children)]
            start = time.perf_counter()
            engine.decode_next(tokens)
            best = min(best, time.perf_counter() - start)
        return 1000 * best
    finally:
        if engine is not None:
            engine.close()
        model.close()
