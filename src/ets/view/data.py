"""What the viewer shows, read from run directories: one problem's tree, the
selections made at each depth, every leaf's answer and verdict, and the
trajectories best-of-N and the weighted majority vote pick.

Everything comes from the run's files (``trees/q{id}.json``, ``answers.json``,
``run.json``). Tree files do not record the allocations, so each selection is
rebuilt from the tree the way the search loop makes it (docs/algorithm.md,
"Retirement and the remaining width"): at depth ``d`` the
candidates are the nodes there that are not retired, the width left is the
width less every retired node so far, each candidate's allocation is its
number of children, and the KV figure is :meth:`ets.Tree.kv_size` of the
candidates. Their sum is the tree file's recorded ``kv_cache_size``; a
problem where it is not says so.

Answers are extracted, graded and picked by :mod:`ets.evaluate`.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ets.evaluate.aggregate import Setting
from ets.evaluate.answers import RunFileError, find_answers, ground_truth_gaps, read_json
from ets.evaluate.evaluator import ProblemResult, evaluate_settings
from ets.evaluate.extract import extract_answer
from ets.evaluate.grade import Grader, default_grader
from ets.evaluate.runs import model_type_of, read_run_json, read_tree_file, run_label
from ets.tree import Tree

# the two aggregations the viewer highlights, by their evaluator names
BEST_OF_N = Setting("last")
WEIGHTED_VOTE = Setting("majority_vote", True, "last")
PICKS = {"bon": BEST_OF_N, "wmv": WEIGHTED_VOTE}

# what became of a node; the page draws each kind differently
EXPANDED = "expanded"  # a candidate given children
PRUNED = "pruned"  # a candidate given none
ANSWER = "answer"  # a leaf: holds a final answer
OUT_OF_BUDGET = "budget"  # retired: used up max_tokens without an answer
ENDED = "ended"  # retired (retire_empty_steps): the policy ended its turn without an answer
NOT_REACHED = "open"  # alive when the search stopped (max_depth, or the width used up)

QUESTION_PREVIEW = 140  # characters of the question in the index


class ViewError(RunFileError):
    """A run directory the viewer cannot read; the message names the path."""


@dataclass
class Selection:
    """One selection call of the search, rebuilt from the tree."""

    depth: int
    candidates: list[int]
    allocation: list[int]  # children given to each candidate, in candidate order
    width_left: int  # finished trajectories still wanted when it ran
    kv: int  # ets.Tree.kv_size of the candidates

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "candidates": self.candidates, "allocation": self.allocation,
                "width_left": self.width_left, "kv": self.kv}


def selections(tree: Tree, width: int, max_depth: int, max_tokens: float,
               retire_empty_steps: bool = False) -> list[Selection]:
    """The selections the search made on ``tree``, in depth order, replaying the
    stopping rules of :func:`ets.search.search` (the same :meth:`Tree.frontier`)."""
    out = []
    remaining = width
    for depth in range(max_depth):
        candidates, retired = tree.frontier(depth, max_tokens, retire_empty_steps)
        remaining -= retired
        if remaining <= 0 or not candidates:
            break
        out.append(Selection(depth, candidates, [len(tree[c].children) for c in candidates], remaining,
                             tree.kv_size(candidates)))
    return out


def _retirement(config: dict[str, Any]) -> tuple[float, bool]:
    """A run config's ``max_tokens`` (no limit when absent) and ``retire_empty_steps``."""
    max_tokens = config.get("max_tokens")
    return (math.inf if max_tokens is None else max_tokens), bool(config.get("retire_empty_steps", False))


def replay(tree: Tree, config: dict[str, Any]) -> list[Selection]:
    """The selections the search made on ``tree`` under a run's config (``run.json``'s, as a dict)."""
    max_tokens, retire_empty_steps = _retirement(config)
    return selections(tree, int(config.get("width", 0)), int(config.get("max_depth", 0)), max_tokens,
                      retire_empty_steps)


def node_states(tree: Tree, chosen: Sequence[Selection], max_tokens: float,
                retire_empty_steps: bool = False) -> list[str]:
    state = [NOT_REACHED] * len(tree)
    for node in tree.nodes:
        if node.leaf:
            state[node.id] = ANSWER
        elif tree.is_retired(node.id, max_tokens):
            state[node.id] = OUT_OF_BUDGET
        elif tree.is_retired(node.id, retire_empty_steps=retire_empty_steps):
            state[node.id] = ENDED
    for sel in chosen:
        for node_id, k in zip(sel.candidates, sel.allocation):
            state[node_id] = EXPANDED if k else PRUNED
    return state


def node_columns(tree: Tree, states: list[str]) -> dict[str, list]:
    """The page's nodes: one list per field, indexed by node id."""
    return {
        "parent": [n.parent_id for n in tree.nodes],
        "depth": [n.depth for n in tree.nodes],
        "score": [n.score for n in tree.nodes],
        "step": [n.step for n in tree.nodes],
        "tokens": [n.num_step_tokens for n in tree.nodes],
        "cum_tokens": [n.cum_tokens for n in tree.nodes],
        "state": states,
    }


def pick_payload(result: ProblemResult, leaves: list[int]) -> dict[str, Any]:
    """What an aggregation picked (one problem's evaluator result), for the page: the leaf node, its
    answer and verdict, and the vote totals of a majority vote."""
    return {
        "node": leaves[result.picked] if result.picked is not None else None,
        "answer": result.answer,
        "correct": result.correct,
        **({"votes": [[rep, total] for rep, total in result.votes]} if result.votes is not None else {}),
    }


def _tree_id(path: Path) -> tuple:
    match = re.fullmatch(r"q(-?\d+)", path.stem)
    return (0, int(match.group(1)), "") if match else (1, 0, path.stem)


def has_trees(run_dir: str | Path) -> bool:
    """Whether a run directory holds tree files (the reference's runs keep none)."""
    return any((Path(run_dir) / "trees").glob("q*.json"))


def tree_files(run_dir: Path) -> list[Path]:
    """The run's tree files, in the order of its answers.json (else by problem id)."""
    trees = run_dir / "trees"
    files = {p.stem: p for p in trees.glob("q*.json")} if trees.is_dir() else {}
    if not files:
        raise ViewError(f"{run_dir}: no trees/q*.json: `ets view` needs a run directory written by `ets run` "
                        "(the reference's runs keep no trees)")
    answers = find_answers(run_dir)
    if answers is not None:
        entries = read_json(answers, ViewError)
        order = list(dict.fromkeys(f"q{entry.get('id')}" for entry in (entries if isinstance(entries, list) else [])
                                   if isinstance(entry, dict)))
        listed = set(order)
        rest = sorted((p for name, p in files.items() if name not in listed), key=_tree_id)
        return [files[name] for name in order if name in files] + rest
    return sorted(files.values(), key=_tree_id)


def _tree_of(file: Path, data: dict) -> Tree:
    try:
        return Tree.from_nodes(data["nodes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ViewError(f"{file}: malformed nodes ({exc})") from None


@dataclass
class KVByDepth:
    """A run's KV-cache figure split by the depth of the selection call, summed over its problems."""

    by_depth: dict[int, int]
    prompt: int  # of the total: the prompt's tokens (the root's), counted again at every selection call

    @property
    def total(self) -> int:
        return sum(self.by_depth.values())


def kv_by_depth(path: str | Path) -> KVByDepth:
    """The figure each depth's selection calls add, from the run's trees (replayed as the viewer does)."""
    run_dir = resolve_run_dir(path)
    run_config = read_run_json(run_dir).get("config") or {}
    by_depth: dict[int, int] = {}
    prompt = 0
    for file in tree_files(run_dir):
        data = read_tree_file(file)
        tree = _tree_of(file, data)
        for s in replay(tree, (data.get("fingerprint") or {}).get("config") or run_config):
            by_depth[s.depth] = by_depth.get(s.depth, 0) + s.kv
            prompt += tree[0].num_step_tokens
    return KVByDepth(by_depth, prompt)


def resolve_run_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        p = p.parent
    if not p.is_dir():
        raise ViewError(f"{p}: no such run directory")
    return p


class RunView:
    """One run, read for the viewer: an index row and a tree payload per problem."""

    def __init__(self, path: str | Path, *, grader: Grader | None = None,
                 problem_ids: Iterable[str] | None = None, model_type: str | None = None) -> None:
        self.path = resolve_run_dir(path)
        self.run = read_run_json(self.path)
        self.grader = grader or default_grader()
        wanted = {str(i) for i in problem_ids} if problem_ids is not None else None
        self.index: list[dict[str, Any]] = []
        self.trees: list[dict[str, Any]] = []
        files = tree_files(self.path)
        saved = []
        for file in files:
            data = read_tree_file(file)
            if wanted is None or str(data["answer"].get("id")) in wanted:
                saved.append((file, data))
        if wanted is not None:
            missing = wanted - {str(d["answer"].get("id")) for _, d in saved}
            if missing:
                raise ViewError(f"{self.path}: no tree for problem(s) {', '.join(sorted(missing))}")
        self.config = self.run.get("config") or (saved[0][1].get("fingerprint") or {}).get("config") or {}
        self.model_type = model_type or model_type_of(self.config)
        # the trees are worth seeing without ground truths, but every verdict would read "wrong"
        gaps = ground_truth_gaps([data["answer"] for _, data in saved], self.path / "trees", refuse_all=False)
        if gaps:
            print(f"ets view: warning: {gaps}", file=sys.stderr)
        self._read(saved)

    @property
    def label(self) -> str:
        return run_label(self.config.get("select_method") or "unknown", self.config.get("width"),
                         self.config.get("temperature"))

    def _read(self, saved: list[tuple[Path, dict]]) -> None:
        entries = [data["answer"] for _, data in saved]
        picked = evaluate_settings(entries, PICKS.values(), self.model_type, self.grader) if entries else {}
        for position, (file, data) in enumerate(saved):
            config = (data.get("fingerprint") or {}).get("config") or self.config
            decided = {key: picked[s.name].problems[position] for key, s in PICKS.items()}
            tree_data, row = self._problem(file, data, config, decided)
            self.trees.append(tree_data)
            self.index.append(row)

    def _problem(self, file: Path, data: dict, config: dict, decided: dict) -> tuple[dict, dict]:
        entry = data["answer"]
        tree = _tree_of(file, data)
        max_tokens, retire_empty_steps = _retirement(config)
        chosen = replay(tree, config)
        states = node_states(tree, chosen, max_tokens, retire_empty_steps)

        # answers.json lists one trajectory per leaf, in node order (ets.search.search)
        leaves = [n.id for n in tree.nodes if n.leaf]
        trajectories = entry.get("model_answer") or []
        if len(leaves) != len(trajectories) or any(
                tree[node_id].text != t.get("text") for node_id, t in zip(leaves, trajectories)):
            raise ViewError(f"{file}: its {len(trajectories)} trajectories are not its {len(leaves)} leaves in order")
        ground_truth = decided["wmv"].ground_truth
        answers = [extract_answer(t.get("text"), self.model_type) for t in trajectories]
        verdicts = [self.grader.is_correct(a, ground_truth) for a in answers]

        picks = {key: pick_payload(result, leaves) for key, result in decided.items()}
        stats = data.get("stats") or {}
        kv_derived = sum(s.kv for s in chosen)
        depth = max(n.depth for n in tree.nodes)
        tree_data = {
            "id": entry.get("id"),
            "question": entry.get("question", ""),
            "ground_truth": ground_truth,
            "ground_truth_raw": entry.get("ground_truth_answer"),
            "nodes": node_columns(tree, states),
            "leaves": {str(node_id): {"answer": a, "correct": ok, "trajectory": i}
                       for i, (node_id, a, ok) in enumerate(zip(leaves, answers, verdicts))},
            "selections": [s.to_dict() for s in chosen],
            "picks": picks,
            "kv_recorded": stats.get("kv_cache_size"),
            "kv_derived": kv_derived,
            "max_tokens": None if max_tokens == math.inf else max_tokens,
        }
        question = entry.get("question", "")
        row = {
            "id": entry.get("id"),
            "question": question[:QUESTION_PREVIEW] + ("…" if len(question) > QUESTION_PREVIEW else ""),
            "wmv": picks["wmv"]["correct"],
            "bon": picks["bon"]["correct"],
            "nodes": len(tree),
            "depth": depth,
            "kv": stats.get("kv_cache_size", kv_derived),
            "tokens": stats.get("tokens_generated", sum(n.num_step_tokens for n in tree.nodes[1:])),
            "leaves": len(leaves),
            "right_leaves": sum(verdicts),
        }
        return tree_data, row

    def summary(self) -> dict[str, Any]:
        n = len(self.index)
        keys = ("select_method", "width", "lambdac", "lambdas", "softmax_temperature", "temperature",
                "max_step_tokens", "max_tokens", "max_depth", "retire_empty_steps", "prompt_format", "policy_model_type")
        return {
            "label": self.label,
            "path": str(self.path),
            "config": {k: self.config.get(k) for k in keys if self.config.get(k) is not None},
            "backends": self.run.get("backends") or {},
            "model_type": self.model_type,
            "problems": n,
            "wmv_correct": sum(r["wmv"] for r in self.index),
            "bon_correct": sum(r["bon"] for r in self.index),
            "nodes": sum(r["nodes"] for r in self.index),
            "kv": sum(r["kv"] for r in self.index),
            "tokens": sum(r["tokens"] for r in self.index),
        }
