"""Model backends behind the policy / reward / embedder protocols."""
from ets.backends.base import BackendError, Context, Embedder, Policy, Reward, SamplingParams, Step

__all__ = ["BackendError", "Context", "Embedder", "Policy", "Reward", "SamplingParams", "Step"]
