"""One problem's tree search (docs/algorithm.md#the-search-loop), asynchronous.

All expansions of a depth run concurrently; the loop reaches the models only
through the policy / reward protocols and the optional embedder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ets.backends.arithmetic import correct_arithmetic
from ets.backends.base import Context, Embedder, Policy, Reward, SamplingParams, Step, draw_stream
from ets.config import SearchConfig
from ets.formats import get_format
from ets.selection import allocate
from ets.selection.common import SelectionParams
from ets.stats import SearchStats
from ets.tree import Tree

# Selection methods heavy enough to run off the event loop (an ILP, sentence embeddings).
THREADED_METHODS = {"softmax_costmodel"}


class SearchError(RuntimeError):
    """A search could not go on; the message names the problem and the node."""


@dataclass
class SearchResult:
    question: str
    tree: Tree
    stats: SearchStats
    answers: list[dict[str, Any]] = field(default_factory=list)  # {text, steps, step_scores}
    problem_id: Any = None

    @property
    def total_tokens(self) -> int:
        return self.stats.tokens_generated


def prompt_text(config: SearchConfig, question: str) -> str:
    """The root of a problem's tree: the question in the config's prompt format."""
    return get_format(config.format_name).prompt(question)


def prompt_overflow(config: SearchConfig, prompt_tokens: int, where: str, *, counted_how: str = "") -> str:
    """Why a prompt of ``prompt_tokens`` tokens makes the search impossible ('' if it does not):
    a trajectory is retired at ``max_tokens``, prompt included, so the root would be retired
    before its first step. ``counted_how`` says how a lower bound was counted (the figure is then
    "at least")."""
    if prompt_tokens < config.max_tokens:
        return ""
    figure = f"at least {prompt_tokens} tokens ({counted_how})" if counted_how else f"{prompt_tokens} tokens"
    return (f"{where}: the prompt is {figure} and max_tokens, the budget of a whole trajectory with its prompt, "
            f"is {config.max_tokens}: no step fits; raise max_tokens (e.g. --set max_tokens="
            f"{prompt_tokens + config.max_step_tokens}) or leave the problem out")


def sampling_params(config: SearchConfig) -> SamplingParams:
    fmt = get_format(config.format_name)
    return SamplingParams(
        temperature=config.temperature, max_tokens=config.max_step_tokens, stop=fmt.stop, seed=config.seed
    )


def add_children(tree: Tree, stats: SearchStats, parent_id: int, steps: list[Step], scores: list[float | None],
                 where: str) -> None:
    """One expansion's scored steps into the tree, counted in ``stats``; a step without a finite score stops
    the search."""
    stats.expansions += 1
    for sample, (step, score) in enumerate(zip(steps, scores)):
        stats.model_calls += 1
        stats.tokens_generated += step.num_tokens
        stats.prompt_tokens_computed += step.prompt_tokens_computed
        stats.prompt_tokens_reused += step.prompt_tokens_reused
        if score is None or not math.isfinite(score):
            raise SearchError(
                f"{where}, child {sample} of node {parent_id}: the reward model returned {'no' if score is None else score} score "
                f"for step {step.text[:60]!r} (check the PRM and its prompt format)"
            )
        tree.add_child(parent_id, step.text, score, step.num_tokens)


async def search(
    question: str,
    config: SearchConfig,
    *,
    policy: Policy,
    reward: Reward,
    embedder: Embedder | None = None,
    problem_id: Any = None,
) -> SearchResult:
    """Search one problem; return its finished trajectories, tree and statistics."""
    started = time.perf_counter()
    prompt = prompt_text(config, question)
    where = f"problem {problem_id!r}" if problem_id is not None else "problem"
    prompt_tokens = await policy.count_tokens(prompt)
    overflow = prompt_overflow(config, prompt_tokens, where)
    if overflow:
        raise SearchError(overflow)
    tree = Tree.with_root(prompt, prompt_tokens)
    stats = SearchStats()
    params = sampling_params(config)
    selection = SelectionParams.from_config(config, problem_id)

    async def expand(node_id: int, k: int) -> tuple[list[Step], list[float | None]]:
        node = tree[node_id]
        context = Context(question, prompt, node.steps)
        # each node its own draw: keyed by the text, two nodes on one path would get the same children
        node_params = dataclasses.replace(params, stream=draw_stream(problem_id, node_id))
        steps = await policy.generate(context, k, node_params)
        if len(steps) != k:
            raise SearchError(f"{where}, node {node_id}: the policy returned {len(steps)} samples, {k} were asked for")
        if config.calculator:
            steps = [dataclasses.replace(s, text=correct_arithmetic(s.text)) for s in steps]
        scores = await reward.score([context.child(s.text) for s in steps])
        if len(scores) != k:
            raise SearchError(f"{where}, node {node_id}: the reward model returned {len(scores)} scores for {k} steps")
        return steps, scores

    remaining = config.width
    for depth in range(config.max_depth):
        candidates, retired = tree.frontier(depth, config.max_tokens, config.retire_empty_steps)
        remaining -= retired
        if remaining <= 0 or not candidates:
            break

        stats.kv_cache_size += tree.kv_size(candidates)
        if config.select_method in THREADED_METHODS:
            alloc = await asyncio.to_thread(allocate, config.select_method, tree, candidates, remaining, selection, embedder)
        else:
            alloc = allocate(config.select_method, tree, candidates, remaining, selection, embedder)
        expansions = [(node_id, k) for node_id, k in alloc.items() if k >= 1]
        results = await asyncio.gather(*(expand(node_id, k) for node_id, k in expansions))

        # children join the tree in expansion order, whatever order they finished in
        for (parent_id, _), (steps, scores) in zip(expansions, results):
            add_children(tree, stats, parent_id, steps, scores, where)

    answers = [
        {"text": node.text, "steps": list(node.steps), "step_scores": tree.path_scores(node.id)}
        for node in tree.nodes
        if node.leaf
    ]
    stats.time = time.perf_counter() - started
    return SearchResult(question=question, tree=tree, stats=stats, answers=answers, problem_id=problem_id)
