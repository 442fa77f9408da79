"""Model backends behind the policy / reward / embedder protocols.

Each backend lives in its own module; the heavy libraries some of them run on
(llama-cpp-python, sentence-transformers, torch) are imported only when such a
backend is built.
"""
from ets.backends.base import BackendError, Backends, Context, Embedder, Policy, Reward, SamplingParams, Step
from ets.backends.scripted import HashingEmbedder, ScriptedPolicy, ScriptedReward, toy_world

__all__ = [
    "BackendError", "Backends", "Context", "Embedder", "HashingEmbedder", "Policy", "Reward", "SamplingParams",
    "ScriptedPolicy", "ScriptedReward", "Step", "toy_world",
]
