"""llama-cpp-python itself, imported on first use: the module, its log lines silenced, a GGUF opened, and
the threads a context decodes on. What the KV-slot engine, the weight copies and the shared models are built on."""

from __future__ import annotations

import ctypes
import os

from ets.backends.base import BackendError

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


def open_model(path: str | os.PathLike):
    """The GGUF at ``path`` loaded on the CPU, for the caller alone (:func:`.loading.load_model` shares one per file)."""
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
