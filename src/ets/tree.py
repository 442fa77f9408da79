"""The search tree: nodes, paths, retirement and the KV-cache figure. No I/O, no models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

# Leaf markers of the reference (docs/algorithm.md#the-leaf-test). The first two are looked for in
# the node's whole text, prompt included (a quirk kept for parity), the last in its newest step.
ANSWER_MARKERS_IN_TEXT = ("The answer is", "The final answer is:")
ANSWER_MARKER_IN_STEP = "Therefore, the final answer is"


def is_leaf_text(text: str, step: str) -> bool:
    """The reference's leaf test: does this node hold a final answer?"""
    return any(marker in text for marker in ANSWER_MARKERS_IN_TEXT) or ANSWER_MARKER_IN_STEP in step


@dataclass
class Node:
    id: int
    parent_id: int | None
    text: str  # full text: prompt and every step
    step: str  # this node's own newest step (the root: its prompt)
    score: float
    depth: int
    num_step_tokens: int  # tokens of `step` (the root: prompt tokens)
    cum_tokens: int  # tokens from the root to here, root included
    leaf: bool
    steps: tuple[str, ...] = ()  # every step from the root's child down to here
    children: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "text": self.text,
            "step": self.step,
            "score": self.score,
            "depth": self.depth,
            "leaf": self.leaf,
            "num_step_tokens": self.num_step_tokens,
            "cum_tokens": self.cum_tokens,
        }

    @property
    def ended(self) -> bool:
        """The policy ended its turn here without an answer: the newest step is empty (a step that
        stopped on the delimiter keeps it, so only the end of text leaves nothing)."""
        return self.parent_id is not None and self.step == "" and not self.leaf


class Tree:
    """All nodes of one problem's search, by id; ids are creation order."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._by_depth: list[list[int]] = []

    # --- building ---
    @classmethod
    def with_root(cls, prompt: str, prompt_tokens: int) -> "Tree":
        tree = cls()
        tree._append(Node(0, None, prompt, prompt, 1.0, 0, prompt_tokens, prompt_tokens, False))
        return tree

    def add_child(self, parent_id: int, step: str, score: float, num_tokens: int) -> Node:
        parent = self.nodes[parent_id]
        text = parent.text + step
        node = Node(
            id=len(self.nodes),
            parent_id=parent_id,
            text=text,
            step=step,
            score=float(score),
            depth=parent.depth + 1,
            num_step_tokens=num_tokens,
            cum_tokens=parent.cum_tokens + num_tokens,
            leaf=is_leaf_text(text, step),
            steps=parent.steps + (step,),
        )
        self._append(node)
        parent.children.append(node.id)
        return node

    @classmethod
    def from_nodes(cls, nodes: Iterable[Mapping[str, Any]]) -> "Tree":
        """A tree from node dicts (``id``, ``parent_id``, ``text``, ``score``, ``depth``,
        ``num_step_tokens``; optional ``step``, ``leaf``), as in the golden cases and tree files."""
        tree = cls()
        rows = sorted(nodes, key=lambda n: n["id"])
        index: dict[int, Node] = {}
        for position, row in enumerate(rows):
            if row["id"] != position:
                raise ValueError(f"node ids must be 0..n-1 in creation order; found id {row['id']} at {position}")
            parent = index.get(row["parent_id"]) if row["parent_id"] is not None else None
            if row["parent_id"] is None and position != 0:
                raise ValueError(f"node {row['id']}: a second root (parent_id null); only node 0 may be the root")
            if row["parent_id"] is not None and parent is None:
                raise ValueError(f"node {row['id']}: parent {row['parent_id']} is not an earlier node")
            step = row.get("step")
            if step is None:
                step = row["text"][len(parent.text):] if parent else row["text"]
            tokens = int(row["num_step_tokens"])
            node = Node(
                id=row["id"],
                parent_id=row["parent_id"],
                text=row["text"],
                step=step,
                score=float(row["score"]),
                depth=int(row["depth"]),
                num_step_tokens=tokens,
                cum_tokens=(parent.cum_tokens if parent else 0) + tokens,
                leaf=bool(row["leaf"]) if "leaf" in row else (parent is not None and is_leaf_text(row["text"], step)),
                steps=(parent.steps + (step,)) if parent else (),
            )
            tree._append(node)
            if parent:
                parent.children.append(node.id)
            index[node.id] = node
        return tree

    def _append(self, node: Node) -> None:
        self.nodes.append(node)
        while len(self._by_depth) <= node.depth:
            self._by_depth.append([])
        self._by_depth[node.depth].append(node.id)

    # --- reading ---
    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def at_depth(self, depth: int) -> list[Node]:
        if depth >= len(self._by_depth):
            return []
        return [self.nodes[i] for i in self._by_depth[depth]]

    def ancestors(self, node_id: int) -> list[int]:
        """Ids from the parent up to the root."""
        out = []
        parent = self.nodes[node_id].parent_id
        while parent is not None:
            out.append(parent)
            parent = self.nodes[parent].parent_id
        return out

    def ancestor_at_depth(self, node_id: int, depth: int) -> int:
        node = self.nodes[node_id]
        while node.depth > depth:
            node = self.nodes[node.parent_id]
        return node.id

    def is_retired(self, node_id: int, max_tokens: float = math.inf, retire_empty_steps: bool = False) -> bool:
        """A node the search stops at: it holds an answer or has used up the token budget, or (with
        ``retire_empty_steps``, ours) its policy ended the turn without an answer."""
        node = self.nodes[node_id]
        return node.leaf or node.cum_tokens >= max_tokens or (retire_empty_steps and node.ended)

    def frontier(self, depth: int, max_tokens: float = math.inf,
                 retire_empty_steps: bool = False) -> tuple[list[int], int]:
        """The nodes of ``depth`` still to expand (the selection's candidates), and how many of that
        depth retired: each is one finished trajectory less to find
        (docs/algorithm.md#retirement-and-the-remaining-width)."""
        candidates, retired = [], 0
        for node in self.at_depth(depth):
            if self.is_retired(node.id, max_tokens, retire_empty_steps):
                retired += 1
            else:
                candidates.append(node.id)
        return candidates, retired

    def path_scores(self, node_id: int) -> list[float]:
        """Scores from the root's child down to this node (the root excluded)."""
        scores = []
        node = self.nodes[node_id]
        while node.parent_id is not None:
            scores.append(node.score)
            node = self.nodes[node.parent_id]
        return scores[::-1]

    def kv_size(self, candidate_ids: Iterable[int]) -> int:
        """Tokens in the union of the root-to-candidate paths (docs/algorithm.md#the-kv-cache-figure): what a
        prefix-sharing server keeps cached while these candidates are alive."""
        seen: set[int] = set()
        total = 0
        for node_id in candidate_ids:
            current: int | None = node_id
            while current is not None and current not in seen:
                seen.add(current)
                total += self.nodes[current].num_step_tokens
                current = self.nodes[current].parent_id
        return total

    def to_dicts(self) -> list[dict[str, Any]]:
        return [node.to_dict() for node in self.nodes]
