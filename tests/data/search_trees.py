"""Search-shaped ETS selection calls, grown by a scripted search (for bench/selection.py and tests).

A scripted policy and PRM drive ``ets.search`` at a given width; every selection call the
loop makes is recorded (candidates and remaining width) and can be replayed on the final
tree. Two embedding regimes for the diversity term:

* ``clusters``: each step is one of a few ideas per depth, so clusters have many members
  all over the tree;
* ``singletons``: nearly every step is its own (one in ten is one of a few common phrases).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
from dataclasses import dataclass
from unittest import mock

import numpy as np

import ets
from ets.backends.scripted import ScriptedPolicy, ScriptedReward

REGIMES = ("clusters", "singletons")
IDEAS = 12  # distinct steps per depth in the clusters regime
COMMON = 4  # common phrases per depth in the singletons regime
ANSWER_DEPTH = 4  # trajectories start to answer here


def unit(*parts: str) -> float:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class TableEmbedder:
    """A fixed random unit vector per distinct text (identical texts embed identically)."""

    def __init__(self, dim: int = 32):
        self.dim = dim
        self.table: dict[str, np.ndarray] = {}

    def vector(self, text: str) -> np.ndarray:
        if text not in self.table:
            self.table[text] = np.random.default_rng(int(unit("embed", text) * 2**62)).standard_normal(self.dim)
        return self.table[text]

    def encode(self, sentences: list[str]) -> np.ndarray:
        return np.array([self.vector(s) for s in sentences])


def scripted_world(regime: str) -> tuple[ScriptedPolicy, ScriptedReward]:
    def step_fn(question: str, steps: list[str], k: int) -> str:
        key = (question, *steps, str(k))
        depth = len(steps) + 1
        pick = unit("step", *key)
        if regime == "clusters":
            body = f"Step {depth}: idea {int(pick * IDEAS)}"
        elif pick < 0.1:
            body = f"Step {depth}: common phrase {int(pick * 10 * COMMON)}"
        else:
            body = f"Step {depth}: idea {pick:.12f}"
        if depth >= ANSWER_DEPTH and unit("answer", *key) < 0.3 + 0.15 * (depth - ANSWER_DEPTH):
            return f"{body}. The answer is: {int(unit('value', *key) * 10)}\n"
        return f"{body}.\n"

    def score_fn(question: str, steps: list[str]) -> float:
        return round(0.02 + 0.96 * unit("score", question, *steps), 6)

    return ScriptedPolicy(step_fn), ScriptedReward(score_fn)


@dataclass
class SelectionCall:
    tree: ets.Tree
    candidates: list[int]
    remaining: int  # the remaining width
    embedder: TableEmbedder


def search_calls(width: int, regime: str, question: str = "q0", lambdac: float = 1.0,
                 lambdas: float = 1.45) -> list[SelectionCall]:
    """The ETS selection calls of one scripted search (the first, of the root alone, left out)."""
    loop_module = importlib.import_module("ets.search")  # the module (``ets.search`` is also the function)
    policy, reward = scripted_world(regime)
    embedder = TableEmbedder()
    config = ets.SearchConfig(width=width, lambdac=lambdac, lambdas=lambdas, prompt_format="raw")
    recorded = []
    allocate = loop_module.allocate

    def record(method, tree, candidates, remaining, params, embedder=None):
        recorded.append((list(candidates), remaining))
        return allocate(method, tree, candidates, remaining, params, embedder)

    with mock.patch.object(loop_module, "allocate", record):
        result = asyncio.run(ets.search(question, config, policy=policy, reward=reward, embedder=embedder))
    return [SelectionCall(result.tree, candidates, remaining, embedder)
            for candidates, remaining in recorded if len(candidates) > 1]


@dataclass
class SmallCase:
    """A selection call built like the golden cases: a random tree, the deepest nodes as
    candidates, step texts drawn from a few ideas (repeats embed identically), random parameters."""

    call: SelectionCall
    params: dict


def small_cases(count: int, seed: int = 0) -> list[SmallCase]:
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        depth = int(rng.integers(1, 6))
        nodes = [{"id": 0, "parent_id": None, "text": "Question: what is the value? ", "score": 1.0, "depth": 0,
                  "num_step_tokens": 20}]
        frontier = [0]
        for d in range(1, depth + 1):
            grown = []
            for parent in frontier:
                for _ in range(int(rng.integers(1, 4)) if len(frontier) < 8 else int(rng.integers(0, 3))):
                    step = f"Step idea {int(rng.integers(1, 10))}: compute value {int(rng.integers(1, 30))}.\n"
                    nodes.append({"id": len(nodes), "parent_id": parent, "text": nodes[parent]["text"] + step,
                                  "step": step, "score": round(float(rng.uniform(0.02, 0.98)), 4), "depth": d,
                                  "num_step_tokens": int(rng.integers(5, 30))})
                    grown.append(len(nodes) - 1)
            if not grown:
                break
            frontier = grown
        if len(frontier) > 17:
            continue
        params = {"softmax_temperature": float(rng.choice([0.2, 0.5, 1.0])),
                  "lambdac": float(rng.choice([0.0, 0.5, 1.0, 2.0, 5.0])),
                  "lambdas": float(rng.choice([0.0, 1.0, 1.45, 1.5, 3.0]))}
        remaining = int(rng.choice([4, 8, 16, 32, 64, 256]))
        embedder = TableEmbedder(dim=8)
        cases.append(SmallCase(SelectionCall(ets.Tree.from_nodes(nodes), frontier, remaining, embedder), params))
    return cases
