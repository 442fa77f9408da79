"""One definition per PRM family: the texts it reads, and the in-process and HTTP PRMs sending the same ones."""

from __future__ import annotations

import pytest

from ets.backends.base import BackendError, Context
from ets.backends.http import make_reward
from ets.backends.prm_families import (
    FAMILY_OF_MODEL,
    JUDGE,
    QWEN,
    RLHFLOW,
    STEP_TAG,
    judge_text,
    qwen_prm_text,
    rlhflow_text,
    step_tag_text,
    token_logit_family,
)
from ets.formats import get_format

LLAMA = get_format("llama")
LLEMMA = get_format("llemma")
# a question with surrounding whitespace, steps with their delimiters
CHAT = Context(" What is 2+3?\n", "<chat prompt>", ("## Step 1: add\n2+3=5\n\n", "The answer is $\\boxed{5}$.\n\n"))
SHEPHERD = Context("1+1?", "1+1?\n", ("Step 1: 1+1=2 ки", "\nThe answer is: 2"))

RLHFLOW_EXPECTED = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3? ## Step 1: add\n2+3=5<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nThe answer is $\\boxed{5}$.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_family_texts():
    assert rlhflow_text(CHAT, LLAMA) == RLHFLOW_EXPECTED
    assert step_tag_text(SHEPHERD, LLEMMA) == "1+1?\nStep 1: 1+1=2 ки\nThe answer is: 2 ки"
    assert step_tag_text(Context("q", "q\n", ("a ки  \n",))) == "q\na ки"  # read at the tag, not after it
    assert qwen_prm_text(CHAT, LLAMA) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\n What is 2+3?\n<|im_end|>\n"
        "<|im_start|>assistant\n## Step 1: add\n2+3=5<extra_0>The answer is $\\boxed{5}$.<extra_0><|im_end|>\n")
    # the qwen policy format and the Qwen PRM open with the same system turn
    assert get_format("qwen").prompt("Q").split("<|im_start|>user")[0] == qwen_prm_text(CHAT).split("<|im_start|>user")[0]
    judged = judge_text(SHEPHERD, LLEMMA)
    assert "Problem: 1+1?\n\nThe student's solution so far:\nStep 1: 1+1=2\n" in judged
    assert "The student's newest step:\nThe answer is: 2\n\nIs the newest step correct?" in judged
    assert "so far:\n(nothing yet)\n" in judge_text(Context("q", "q", ("first step\n",)))


def test_which_family_a_model_or_format_reads():
    assert [token_logit_family(get_format(n)) for n in ("llemma", "mistral", "llama", "qwen", "small_instruct")] == [
        STEP_TAG, STEP_TAG, RLHFLOW, JUDGE, JUDGE]  # the Qwen PRM reads no token: a judge on the CPU
    assert FAMILY_OF_MODEL["qwen"] is QWEN and not QWEN.reads_tokens
    assert (RLHFLOW.good, RLHFLOW.bad) == (("+",), ("-",)) and JUDGE.good[0] == "Yes"


def test_http_adapters_send_the_family_texts():
    rlhflow = make_reward("http://127.0.0.1:9", api="sglang", reward_model_type="llama", prompt_format="llama")
    assert rlhflow.adapter.body(CHAT)["text"] == RLHFLOW_EXPECTED
    assert rlhflow.adapter.body(CHAT)["token_ids_logprob"] == [10, 12]
    shepherd = make_reward("http://127.0.0.1:9", api="sglang", reward_model_type="mistral", prompt_format="llemma")
    assert shepherd.adapter.body(SHEPHERD)["text"] == "1+1?\nStep 1: 1+1=2 ки\nThe answer is: 2 ки"


def test_in_process_prm_renders_what_the_http_adapter_sends():
    pytest.importorskip("llama_cpp")
    from ets.backends.llamacpp import TokenLogitPRM
    from ets.backends.llamacpp.weights import default_policy_model_path

    try:
        default_policy_model_path()
    except BackendError as e:  # pragma: no cover - depends on the install
        pytest.skip(str(e))
    for fmt, model_type, ctx in (("llama", "llama", CHAT), ("llemma", "mistral", SHEPHERD)):
        http = make_reward("http://127.0.0.1:9", api="sglang", reward_model_type=model_type, prompt_format=fmt)
        prm = TokenLogitPRM(format=fmt, n_ctx=512, n_slots=1)
        try:
            assert prm.render(ctx) == http.adapter.body(ctx)["text"]
        finally:
            prm.close()
