"""retire_empty_steps (ours): a trajectory whose policy ended its turn without an answer (an empty
newest step) is retired instead of being expanded again, one empty step a depth, to max_depth."""

import asyncio

import pytest

from ets import Tree
from ets.backends.scripted import ScriptedPolicy, ScriptedReward
from ets.config import ConfigError, SearchConfig
from ets.search import search
from ets.view.data import ENDED, node_states, selections


def step_fn(question, steps, k):
    if not steps:
        return ["Half of 6 is 3.\n", "No idea."][k]  # sample 1 ends its turn without an answer
    if steps[-1] in ("No idea.", ""):
        return ""  # and ends it again each time it is asked to go on
    return "The answer is: 3\n"


def tokens(text):
    return max(1, len(text.split()))  # the end-of-turn token alone counts one, as the CPU policy counts it


def run(retire_empty_steps, max_depth=25):
    config = SearchConfig(width=2, select_method="softmax", prompt_format="raw", max_depth=max_depth,
                          retire_empty_steps=retire_empty_steps)
    policy = ScriptedPolicy(step_fn, tokens)
    return asyncio.run(search("Q", config, policy=policy, reward=ScriptedReward(lambda q, s: 0.5)))


def test_the_reference_expands_an_ended_trajectory_to_max_depth():
    result = run(False)
    # depth 0: the root gets both samples; depth 1: one child each (equal scores); from depth 2 on the
    # answer has retired (W = 1) and the ended path gets W's one child a depth, up to depth 24
    assert result.stats.model_calls == 2 + 2 + 23
    assert max(n.depth for n in result.tree.nodes) == 25
    # KV: root (1), then root + both steps (1 + 5 + 2), then root + "No idea." + d - 1 empty steps at depth d
    assert result.stats.kv_cache_size == 1 + 8 + sum(1 + 2 + (d - 1) for d in range(2, 25))
    assert [a["steps"] for a in result.answers] == [["Half of 6 is 3.\n", "The answer is: 3\n"]]


def test_retiring_it_uses_up_its_width_and_stops_the_search():
    result = run(True)
    assert result.stats.model_calls == 4
    assert result.stats.kv_cache_size == 1 + 8
    assert max(n.depth for n in result.tree.nodes) == 2
    assert [a["steps"] for a in result.answers] == [["Half of 6 is 3.\n", "The answer is: 3\n"]]
    ended = [n for n in result.tree.nodes if n.ended]
    assert [(n.depth, n.parent_id) for n in ended] == [(2, 2)]


def test_only_an_empty_step_ends_a_trajectory():
    tree = Tree.with_root("Q", 1)
    blank = tree.add_child(0, "\n", 0.5, 1)  # a blank line: the model goes on
    ended = tree.add_child(0, "", 0.0, 1)
    answered = tree.add_child(blank.id, "", 0.5, 1)
    tree.nodes[answered.id].leaf = True  # a leaf (e.g. its text matched the answer markers) is an answer
    assert not tree.root.ended and not blank.ended and ended.ended and not answered.ended
    assert tree.frontier(1) == ([1, 2], 0)
    assert tree.frontier(1, retire_empty_steps=True) == ([1], 1)


def test_the_viewer_replays_the_retirement_and_marks_the_node():
    for retire in (False, True):
        result = run(retire)
        chosen = selections(result.tree, 2, 25, float("inf"), retire)
        assert sum(s.kv for s in chosen) == result.stats.kv_cache_size
        states = node_states(result.tree, chosen, float("inf"), retire)
        assert (ENDED in states) is retire
        if retire:
            assert [i for i, s in enumerate(states) if s == ENDED] == [3]  # REBASE expands the later of equals first


def test_the_setting_takes_true_or_false():
    assert SearchConfig.from_dict({"retire_empty_steps": True}).retire_empty_steps is True
    with pytest.raises(ConfigError, match="retire_empty_steps: expected true or false, got 'yes'"):
        SearchConfig.from_dict({"retire_empty_steps": "yes"})
