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
# the policy server's own figures, after the reference's lines (only for a run on a server that reports them)
SERVER_LOG_LABELS = {
    "server_prefix_cache_queries": "Server prefix cache queries",
    "server_prefix_cache_hits": "Server prefix cache hits",
    "server_kv_cache_usage_peak": "Server KV cache usage peak",
}
PEAK_FIELDS = {"server_kv_cache_usage_peak"}  # merged by their highest value, not summed


@dataclass
class SearchStats:
    kv_cache_size: int = 0  # tokens in the union of live root-to-candidate paths, summed over selections
    model_calls: int = 0  # one per child generated
    tokens_generated: int = 0  # step tokens sampled
    prompt_tokens_computed: int = 0  # prefix tokens the policy actually evaluated (where it reports them)
    prompt_tokens_reused: int = 0  # prefix tokens served from the policy's cache
    expansions: int = 0  # policy requests (one per expanded node)
    time: float = 0.0  # seconds
    # what the policy server reports about itself (vLLM's or SGLang's /metrics; 0 where it does not): prompt tokens it looked
    # up in its prefix cache and found there while the problem was searched, and the highest share of its
    # KV-cache blocks in use (ets.backends.http.metrics)
    server_prefix_cache_queries: int = 0
    server_prefix_cache_hits: int = 0
    server_kv_cache_usage_peak: float = 0.0

    def add(self, other: "SearchStats") -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(mine, theirs) if f.name in PEAK_FIELDS else mine + theirs)

    @property
    def server_reported(self) -> bool:
        return self.server_prefix_cache_queries > 0 or self.server_kv_cache_usage_peak > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchStats":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def stats_log(self) -> str:
        """The reference's stats.log: four lines, ``label: figure``; then, for a run on a server that reports
        its own KV figures, those (:data:`SERVER_LOG_LABELS`)."""
        labels = {**STATS_LOG_LABELS, **(SERVER_LOG_LABELS if self.server_reported else {})}
        return "".join(f"{label}: {getattr(self, name)}\n" for name, label in labels.items())
