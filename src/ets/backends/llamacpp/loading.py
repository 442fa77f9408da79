"""The GGUF models loaded in this process, once each: the policy and an in-process PRM on the same file
share one model."""

from __future__ import annotations

import os
import threading

from ets.backends.base import BackendError
from ets.backends.llamacpp.library import open_model
from ets.backends.llamacpp.weights import resolve_policy_model
from ets.models import BUILTIN_POLICIES, SMALL_POLICY_DEFAULTS

DEFAULT_FORMAT = SMALL_POLICY_DEFAULTS["prompt_format"]  # the prompt format the built-in CPU models run with

_LOAD_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}  # resolved path -> llama_cpp's LlamaModel


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
