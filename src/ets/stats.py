"""Run statistics (docs/algorithm.md#run-statistics), kept per search and merged per run: no globals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class SearchStats:
    kv_cache_size: int = 0  # tokens in the union of live root-to-candidate paths, summed over selections
    model_calls: int = 0  # one per child generated
    tokens_generated: int = 0  # step tokens sampled
    prompt_tokens_computed: int = 0  # prefix tokens the policy actually evaluated (where it reports them)
    prompt_tokens_reused: int = 0  # prefix tokens served from the policy's cache
    expansions: int = 0  # policy requests (one per expanded node)
    time: float = 0.0  # seconds

    def add(self, other: "SearchStats") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchStats":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def stats_log(self) -> str:
        """The reference's stats.log: four lines."""
        return (
            f"Total KV cache size: {self.kv_cache_size}\n"
            f"Number of Model Calls: {self.model_calls}\n"
            f"Number of Tokens Generated: {self.tokens_generated}\n"
            f"Time: {self.time}\n"
        )
