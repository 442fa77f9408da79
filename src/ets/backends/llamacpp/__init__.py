"""In-process llama.cpp backends: a policy and a token-logit PRM / judge on the CPU.

Both run a GGUF model through ``llama-cpp-python``'s low-level API: one loaded model file,
shared (:mod:`.loading`); one llama.cpp context each, so the policy's cache and the judge's do
not evict each other. Each context is a :class:`~.engine.SlotEngine`: a pool of sequence slots
in one unified KV cache, so a node's prefix is evaluated once for all its children.

* :mod:`.library` -- importing llama-cpp-python, opening a GGUF, threads per context;
* :mod:`.engine` -- the KV-slot engine;
* :mod:`.weights` -- the file a built-in policy computes with: a 16-bit or 8-bit copy, the faster one here;
* :mod:`.loading` -- loading a GGUF once, for the policy and the judge to share;
* :mod:`.policy` -- :class:`LlamaCppPolicy`, the scheduler batching every running child;
* :mod:`.prm` -- :class:`TokenLogitPRM`, a reward read off next-token logits.

llama.cpp contexts are not thread-safe: every call runs in a worker thread (or the policy's
scheduler thread) under the context's lock.
"""

from ets.backends.llamacpp.library import default_threads
from ets.backends.llamacpp.loading import DEFAULT_FORMAT, load_model
from ets.backends.llamacpp.policy import LlamaCppPolicy
from ets.backends.llamacpp.prm import TokenLogitPRM, build_llamacpp_judge
from ets.backends.prm_families import JUDGE_TEMPLATE

__all__ = ["DEFAULT_FORMAT", "JUDGE_TEMPLATE", "LlamaCppPolicy", "TokenLogitPRM", "build_llamacpp_judge",
           "default_threads", "load_model"]
