"""Run statistics (docs/algorithm.md#run-statistics), kept per search and merged per run: no globals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


# The reference's stats.log: each line's label, by the field it gives, in the file's order
# (ets report reads the lines back by these labels).
STATS_LOG_LABELS = {
    "kv_cache_size": "Total KV cache size",
    "model_calls": "Number of Model Calls",
    "tokens_generated": "Number of Tokens Generated",
    "time": "Time",
}


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
        """The reference's stats.log: four lines, ``label: figure``."""
        return "".join(f"{label}: {getattr(self, name)}\n" for name, label in STATS_LOG_LABELS.items())
