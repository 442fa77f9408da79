"""The model-free arithmetic PRM: what it reads off a step, and that its score follows it."""

import asyncio
from fractions import Fraction

import pytest

from ets.backends.arithmetic import (
    FEATURES,
    WEIGHTS,
    ArithmeticPRM,
    answer_value,
    equations_in,
    path_features,
    question_numbers,
)
from ets.backends.base import Context

BAKER = "A baker has 12 rolls. He sells 5 rolls and then bakes eight more. How many rolls does he have now?"


@pytest.mark.parametrize("step, expected", [
    ("After selling, the baker has 12 - 5 = 7 rolls.", [(7, 7, True)]),
    ("9 - 6 = 1", [(3, 1, False)]),
    ("15 - 15 = 1", [(0, 1, False)]),
    ("5 apples + 3 apples = 8 apples", [(8, 8, True)]),
    ("3 x $4 = $12", [(12, 12, True)]),
    ("(3 + 4) * 2 = 14", [(14, 14, True)]),
    ("1,200 + 300 = 1,500", [(1500, 1500, True)]),
    ("10 / 3 = 3.33", [(Fraction(10, 3), Fraction(333, 100), True)]),  # rounded at the precision written
    ("10 / 3 = 3.5", [(Fraction(10, 3), Fraction(7, 2), False)]),
    ("He has 5 + 2 = 8 toys, so 8 - 1 = 7.", [(7, 8, False), (7, 7, True)]),
    ("2 + 3 = 5 = 6", [(5, 5, True)]),  # '5 = 6' states no arithmetic
    ("x = 5, and 7 = 7", []),
    ("Divide by zero: 4 / 0 = 1", []),
])
def test_equations_are_read_and_checked_exactly(step, expected):
    found = [(eq.lhs, eq.rhs, eq.holds) for eq in equations_in(step)]
    assert found == [(Fraction(a), Fraction(b), holds) for a, b, holds in expected]


def test_question_numbers_in_digits_and_words():
    assert question_numbers(BAKER) == {12, 5, 8}
    assert question_numbers("Half of a dozen eggs, twice.") == {Fraction(1, 2), 12, 2}


@pytest.mark.parametrize("line, value", [
    ("Therefore, the final answer is: 15.", 15),
    ("Therefore, the final answer is 14 + 14 = 28.", 28),  # graded on the right-hand side, as the evaluator does
    ("The answer is $1,200.", 1200),
    ("The answer is: -4 apples", -4),
    ("The answer is x", None),
    ("no answer here: 12", None),
])
def test_answer_value(line, value):
    assert answer_value(line) == value


def test_features_of_a_correct_path():
    steps = ["After selling, he has 12 - 5 = 7 rolls.\n", "He has 7 + 8 = 15 rolls.\n", "Therefore, the final answer is: 15."]
    f = path_features(BAKER, steps)
    assert f == {"false_equations": 0, "newest_false": 0.0, "ungrounded": 0, "is_answer": 1.0,
                 "answer_computed": 1.0, "answer_copied": 0.0, "no_work": 0.0, "true_equations": 2}
    assert set(f) == set(FEATURES)


def test_features_of_a_wrong_path():
    steps = ["He has 12 + 9 = 20 rolls.\n", "He has 12 + 9 = 20 rolls.\n", "Therefore, the final answer is: 12."]
    f = path_features(BAKER, steps)
    assert f["false_equations"] == 2 and f["newest_false"] == 0.0  # the answer line states no equation
    assert f["true_equations"] == 0
    assert f["ungrounded"] == 1  # 9 comes from nowhere the first time; the repeat finds it in step 1
    assert f["answer_copied"] == 1.0 and f["answer_computed"] == 0.0
    assert path_features(BAKER, ["Let us think.\n"])["no_work"] == 1.0
    assert path_features(BAKER, steps[:1])["newest_false"] == 1.0


def test_score_follows_the_arithmetic():
    prm = ArithmeticPRM()
    right = prm.score_steps(BAKER, ["After selling, he has 12 - 5 = 7 rolls.\n"])
    wrong = prm.score_steps(BAKER, ["After selling, he has 12 - 5 = 6 rolls.\n"])
    assert 0 < wrong < right < 1
    # an error early on lowers every later step, even a true one
    after_right = prm.score_steps(BAKER, ["12 - 5 = 7\n", "7 + 8 = 15\n"])
    after_wrong = prm.score_steps(BAKER, ["12 - 5 = 6\n", "6 + 8 = 14\n"])
    assert after_wrong < after_right
    # the answer that the work computed beats a number copied from the question
    work = ["12 - 5 = 7\n", "7 + 8 = 15\n"]
    assert prm.score_steps(BAKER, work + ["Therefore, the final answer is: 15."]) > \
        prm.score_steps(BAKER, work + ["Therefore, the final answer is: 12."])


def test_an_empty_step_is_a_dead_end():
    prm = ArithmeticPRM()
    assert prm.score_steps(BAKER, ["12 - 5 = 7\n", ""]) == 0.0
    assert prm.score_steps(BAKER, ["12 - 5 = 7\n", " \n"]) == 0.0
    assert prm.score_steps(BAKER, ["12 - 5 = 7\n"]) > 0.5


def test_reward_protocol():
    prm = ArithmeticPRM()
    contexts = [Context(BAKER, "p", ("12 - 5 = 7\n",)), Context(BAKER, "p", ())]
    scores = asyncio.run(prm.score(contexts))
    assert scores[0] == prm.score_steps(BAKER, ["12 - 5 = 7\n"]) and scores[1] is None
    with pytest.raises(ValueError, match="unknown arithmetic PRM feature.*colour"):
        ArithmeticPRM({**WEIGHTS, "colour": 1.0})


def test_selected_from_config_and_served_by_default():
    from ets.backends.factory import BackendSpec, build_cpu_reward, uses_cpu_llm_reward
    from ets.config import SearchConfig
    from ets.serve.reward_server import builtin_reward

    for reward_type in ("arithmetic", "llemma"):  # the CPU default whatever the reference's PRM family says
        config = SearchConfig(reward_model_type=reward_type, prompt_format="small_instruct")
        assert isinstance(build_cpu_reward(BackendSpec(), config), ArithmeticPRM)
        assert not uses_cpu_llm_reward(BackendSpec(), config)  # so the policy takes every core
    judge = SearchConfig(reward_model_type="judge", prompt_format="small_instruct")
    assert uses_cpu_llm_reward(BackendSpec(), judge)
    assert uses_cpu_llm_reward(BackendSpec(reward_model="prm.gguf"), SearchConfig(prompt_format="small_instruct"))
    reward, name = builtin_reward()
    assert isinstance(reward, ArithmeticPRM) and name == "arithmetic" and reward.weights == WEIGHTS
    assert builtin_reward(policy="qwen2.5-coder-0.5b")[0].weights["true_equations"] > 0  # ets serve reward --policy
    with pytest.raises(ValueError, match="reads no model"):
        builtin_reward("prm.gguf", mode="arithmetic")


@pytest.mark.parametrize("step, corrected", [
    ("Brian has 39 - 18 = 12 pencils left.\n", "Brian has 39 - 18 = 21 pencils left.\n"),
    ("Hazel caught 24 - 27 = 3 more.", "Hazel caught 24 - 27 = -3 more."),
    ("1,200 + 300 = 1,400 in all", "1,200 + 300 = 1500 in all"),
    ("The cost is $4 * 3 = $10.", "The cost is $4 * 3 = $12."),
    ("(2 + 3) * 4 = 21.", "(2 + 3) * 4 = 20."),
    ("Each gets 10 / 4 = 2 apples.", "Each gets 10 / 4 = 2.5 apples."),
    ("Each gets 10 / 3 = 3.5.", "Each gets 10 / 3 = 3.3333."),
    # a later equation reads the corrected text (its operand 448 stays as written)
    ("He gave 134 + 269 = 448, then 448 + 269 = 746.", "He gave 134 + 269 = 403, then 448 + 269 = 717."),
    ("10 / 3 = 3.33 each", "10 / 3 = 3.33 each"),  # true at the precision written: untouched
    ("Therefore, the final answer is: 7 + 2 = 9.", "Therefore, the final answer is: 7 + 2 = 9."),
    ("x = 5, and 7 = 8", "x = 5, and 7 = 8"),  # no arithmetic stated
])
def test_the_calculator_corrects_false_results(step, corrected):
    from ets.backends.arithmetic import correct_arithmetic

    assert correct_arithmetic(step) == corrected
    assert all(eq.holds for eq in equations_in(corrected))


def test_the_calculator_option_corrects_every_step_the_search_keeps():
    from ets.backends.scripted import ScriptedPolicy, ScriptedReward
    from ets.config import SearchConfig
    from ets.search import search

    def step_fn(question, steps, k):
        if not steps:
            return f"He has 12 - 5 = {7 + k} rolls.\n"  # sample 0 right, sample 1 wrong
        if len(steps) == 1:
            rolls = steps[0].split("= ")[1].split()[0]  # the next step works with what the path says
            return f"Then {rolls} + 8 = 15.\n"
        return "The answer is: 15\n"

    seen = []
    reward = ScriptedReward(lambda q, steps: seen.append(steps[-1]) or 0.5)
    for calculator, expected in ((False, ["Then 7 + 8 = 15.\n", "Then 8 + 8 = 15.\n"]),
                                 (True, ["Then 7 + 8 = 15.\n", "Then 7 + 8 = 15.\n"])):
        seen.clear()
        config = SearchConfig(width=2, select_method="best_of_n", prompt_format="raw", calculator=calculator)
        result = asyncio.run(search(BAKER, config, policy=ScriptedPolicy(step_fn), reward=reward))
        assert sorted(a["steps"][1] for a in result.answers) == expected
        # the PRM scored the text the path keeps
        assert ("He has 12 - 5 = 8 rolls.\n" in seen) is not calculator
    from ets.config import ConfigError

    with pytest.raises(ConfigError, match="calculator: expected true or false, got 1"):
        SearchConfig(calculator=1)


BRIAN = "Brian has 39 pencils. He gives 18 pencils to a friend. He buys 22 more pencils. How many pencils does Brian have now?"
# two trajectories Qwen2.5-Coder-0.5B wrote for one tuning problem: the right one does one more sum
BRIAN_WRONG = ["Brian has 39 - 18 = 21 pencils left.", "Brian buys 22 more pencils.", "Therefore, the final answer is: 21."]
BRIAN_RIGHT = ["Brian has 39 - 18 = 21 pencils.", "Brian buys 22 more pencils, so he now has 21 + 22 = 43 pencils.",
               "Therefore, the final answer is: 43."]


def test_weights_fitted_to_the_policy():
    smollm2, qwen = ArithmeticPRM.for_policy(None), ArithmeticPRM.for_policy("qwen2.5-coder-0.5b")
    assert smollm2.weights == WEIGHTS and "smollm2-135m" in smollm2.model_path
    assert ArithmeticPRM.for_policy("/models/other.gguf").weights == WEIGHTS  # any other policy: SmolLM2's
    assert "qwen2.5-coder-0.5b" in qwen.model_path
    # SmolLM2's weights reward short solutions (its right paths are short), and so rank Qwen's right
    # path below the wrong one; the weights fitted to Qwen's work rank them the right way round
    assert smollm2.score_steps(BRIAN, BRIAN_RIGHT) < smollm2.score_steps(BRIAN, BRIAN_WRONG)
    assert qwen.score_steps(BRIAN, BRIAN_RIGHT) > qwen.score_steps(BRIAN, BRIAN_WRONG)
    # a false equation is a wrong step for any policy (the Qwen fit never saw one: the calculator was on)
    assert qwen.score_steps(BRIAN, ["Brian has 39 - 18 = 12 pencils left."]) < qwen.score_steps(
        BRIAN, ["Brian has 39 - 18 = 21 pencils left."])


def test_the_config_policy_picks_the_weights():
    from ets.backends.factory import BackendSpec, build_cpu_reward
    from ets.config import SearchConfig

    config = SearchConfig(prompt_format="small_instruct", policy_model="qwen2.5-coder-0.5b")
    assert build_cpu_reward(BackendSpec(), config).weights["true_equations"] > 0
    # --policy_model (the spec) wins over the config's key
    assert build_cpu_reward(BackendSpec(policy_model="smollm2-135m"), config).weights == WEIGHTS
