"""Model backends behind the policy / reward / embedder protocols.

Heavy backends (llama.cpp, HTTP, sentence-transformers) live in their own
modules and are imported only when used.
"""
from ets.backends.base import BackendError, Backends, Context, Embedder, Policy, Reward, SamplingParams, Step
from ets.backends.scripted import HashingEmbedder, ScriptedPolicy, ScriptedReward, toy_world

__all__ = [
    "BackendError", "Backends", "Context", "Embedder", "HashingEmbedder", "Policy", "Reward", "SamplingParams",
    "ScriptedPolicy", "ScriptedReward", "Step", "toy_world",
]
