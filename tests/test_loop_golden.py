"""Every whole-search case of the reference (golden/loop_public.json) reproduced exactly."""

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

import ets
from ets.backends.scripted import ScriptedPolicy, ScriptedReward

DATA = Path(__file__).parent / "data"
CASES = json.loads((DATA / "loop_public.json").read_text())
_spec = importlib.util.spec_from_file_location("scripted_world", DATA / "scripted_world.py")
world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(world)


def run_case(case):
    config = ets.SearchConfig(**case["config"], prompt_format="raw")
    policy = ScriptedPolicy(
        step_fn=lambda q, steps, k: world.step_fn(q, steps, k, case["answer_depth"], case["vocab"]),
        token_fn=world.token_fn,
    )
    reward = ScriptedReward(score_fn=world.score_fn)
    return asyncio.run(ets.search(case["question"], config, policy=policy, reward=reward))


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['config']['select_method']}-w{c['config']['width']}" for i, c in enumerate(CASES)])
def test_search_matches_reference(case):
    result = run_case(case)
    got = sorted(({"steps": a["steps"], "step_scores": a["step_scores"]} for a in result.answers), key=lambda a: a["steps"])
    expected = case["expected"]
    assert got == sorted(expected["answers"], key=lambda a: a["steps"])
    assert result.stats.kv_cache_size == expected["kv_cache_size"]
    assert result.stats.tokens_generated == expected["tokens_generated"]
    assert result.stats.model_calls == expected["model_calls"]
    # every answer's text is the prompt followed by its steps, and has one score per step
    for answer in result.answers:
        assert answer["text"] == case["question"] + "".join(answer["steps"])
        assert len(answer["step_scores"]) == len(answer["steps"])
