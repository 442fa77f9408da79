"""Every whole-search case of the reference (tests/data/loop_public.json) reproduced exactly."""

import asyncio
import json
from pathlib import Path

import pytest

import ets
from ets.backends.scripted import ScriptedPolicy, ScriptedReward

DATA = Path(__file__).parent / "data"
CASES = json.loads((DATA / "loop_public.json").read_text())


def run_case(case, world, ilp_solver="highs"):
    config = ets.SearchConfig(**case["config"], prompt_format="raw", ilp_solver=ilp_solver)
    policy = ScriptedPolicy(
        step_fn=lambda q, steps, k: world.step_fn(q, steps, k, case["answer_depth"], case["vocab"]),
        token_fn=world.token_fn,
    )
    reward = ScriptedReward(score_fn=world.score_fn)
    return asyncio.run(ets.search(case["question"], config, policy=policy, reward=reward))


ETS_CASES = [c for c in CASES if c["config"]["select_method"] == "softmax_costmodel"]


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['config']['select_method']}-w{c['config']['width']}" for i, c in enumerate(CASES)])
def test_search_matches_reference(case, scripted_world):
    check(case, run_case(case, scripted_world))


@pytest.mark.parametrize("case", ETS_CASES, ids=[f"ets-{i}" for i in range(len(ETS_CASES))])
def test_search_matches_reference_with_the_milp_solver(case, scripted_world):
    check(case, run_case(case, scripted_world, ilp_solver="highs-milp"))


def check(case, result):
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
