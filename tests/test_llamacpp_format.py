"""The small_instruct prompt format of the CPU models: leaf test and answer extraction agree with it."""

from ets.evaluate.extract import extract_answer
from ets.formats import get_format
from ets.tree import is_leaf_text


def test_prompt_is_not_a_leaf_and_the_answer_line_is():
    fmt = get_format("small_instruct")
    prompt = fmt.prompt("Tom has 3 apples and buys 5 more. How many apples does he have?")
    # the leaf test reads the whole text for these two: the prompt must not hold them
    assert "The answer is" not in prompt and "The final answer is:" not in prompt
    assert not is_leaf_text(prompt, "")
    step1 = "He has 3 + 5 = 8 apples.\n"
    assert not is_leaf_text(prompt + step1, step1)
    last = "Therefore, the final answer is: 8."
    assert is_leaf_text(prompt + step1 + last, last)
    # what SmolLM2 also writes on its own
    assert is_leaf_text(prompt + "The answer is: 8", "The answer is: 8")
    assert fmt.stop == ("\n",)
    assert extract_answer(prompt + step1 + last, "small_instruct") == "8"
    assert extract_answer(prompt + step1 + "Therefore, the final answer is: 1,200.\n", "small_instruct") == "1200"
    # the worked examples hold answer lines too, but every leaf ends with its own, which is read last
    leaf = prompt + step1 + "The answer is: 8"
    assert is_leaf_text(leaf, "The answer is: 8") and extract_answer(leaf, "small_instruct") == "8"
