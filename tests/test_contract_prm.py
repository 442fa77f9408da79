"""Contract tests: the PRM adapters' requests and their reading of answers, pinned to the
shapes SGLang's ``/generate`` and vLLM's ``/pooling`` document (no GPU here: the
servers are the stand-ins of tests/standins/servers.py, which serve those shapes).

Sources: SGLang "Sampling Parameters" (/generate arguments: return_logprob,
logprob_start_len, top_logprobs_num, token_ids_logprob) and "SGLang Native
APIs" (meta_info with output_token_ids_logprobs: per position, a list of
[logprob, token_id, text]); vLLM "OpenAI-Compatible Server" -> Pooling API
(request {"model", "input"}; PoolingResponse data[i].data) and the
Qwen2.5-Math-PRM model card (steps joined by <extra_0>, [p_bad, p_good] per step).
"""

from __future__ import annotations

import math

import pytest

from ets.backends.base import BackendError, Context
from ets.backends.http import make_reward, parse_pooling_score, parse_sglang_score
from ets.backends.http.reward import PRM_SPECS
from ets.backends.prm_families import qwen_prm_text, rlhflow_text
from standins.servers import StandinServer, run, unit

Q = "What is 2+3?"
SHEPHERD = Context(Q, Q + "\n", ("Step 1: 2+3=5. ки", "\nThe answer is: 5 ки"))
CHAT = Context(Q, "<chat prompt>", ("## Step 1: add\n2+3=5\n\n", "Therefore, the final answer is: $\\boxed{5}$.\n\n"))


# ---------------------------------------------------------------------------- SGLang /generate


def test_sglang_generate_request_is_the_documented_one():
    with StandinServer("sglang", model="peiyi9979/math-shepherd-mistral-7b-prm") as server:
        reward = make_reward(server.url, reward_model_type="mistral", timeout=5)
        scores = run(reward.score([SHEPHERD, SHEPHERD.child(" more ки")]))
        assert reward.api == "sglang"  # chosen from reward_model_type: the server is not ours
        bodies = server.posts("/generate")
    assert sorted(b["text"] for b in bodies) == sorted([SHEPHERD.text, SHEPHERD.text + " more ки"])
    body = next(b for b in bodies if b["text"] == SHEPHERD.text)  # the two are sent at once: any order
    assert body == {
        "text": SHEPHERD.text,  # the policy's text, ending with the step tag
        "sampling_params": {"max_new_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1},
        "return_logprob": True,
        "logprob_start_len": -1,  # no prompt logprobs: the cached prefix is reused
        "top_logprobs_num": 0,
        "token_ids_logprob": [648, 387],  # math-shepherd '+' / '-'
    }
    # the stand-in puts p(+) = 0.9 * p and p(-) = 0.9 * (1 - p): normalised, p
    expected = 0.05 + 0.9 * unit("score", SHEPHERD.text)
    assert scores[0] == pytest.approx(expected, rel=1e-9)
    assert 0 < scores[1] < 1 and scores[1] != scores[0]


def test_sglang_answer_parsing():
    meta = {"meta_info": {"output_token_ids_logprobs": [[[math.log(0.3), 648, None], [math.log(0.1), 387, "-"]]],
                          "output_token_logprobs": [[math.log(0.3), 648, None]]}}
    assert parse_sglang_score(meta, 648, 387) == pytest.approx(0.75)
    assert parse_sglang_score(meta, 648, None) == pytest.approx(0.3)  # one id: p(good)
    assert parse_sglang_score([meta], 648, 387) == pytest.approx(0.75)  # a batch answer
    with pytest.raises(BackendError, match="lacks the logprobs of token ids 1/2"):
        parse_sglang_score(meta, 1, 2, where="http://x/generate")
    with pytest.raises(BackendError, match="output_token_ids_logprobs"):
        parse_sglang_score({"text": "+", "meta_info": {}}, 648, 387)


def test_sglang_model_check_and_not_an_sglang_server():
    with StandinServer("sglang", model="peiyi9979/math-shepherd-mistral-7b-prm") as server:
        reward = make_reward(server.url, api="sglang", reward_model_type="mistral", model="other/prm", timeout=5)
        with pytest.raises(BackendError) as err:
            run(reward.start())
        assert "other/prm" in str(err.value) and server.url in str(err.value)
    with StandinServer("vllm-pooling", model="Qwen/Qwen2.5-Math-PRM-7B") as server:
        reward = make_reward(server.url, api="sglang", reward_model_type="mistral", timeout=5)
        with pytest.raises(BackendError, match="not an SGLang server"):
            run(reward.start())


def test_rlhflow_text_ends_where_the_judgement_goes():
    text = rlhflow_text(CHAT)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3? ## Step 1")
    assert text.count("+<|eot_id|>") == 1  # the earlier step's judgement; the newest one is being asked
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert PRM_SPECS["llama"].good_id == 10 and PRM_SPECS["llama"].bad_id == 12


def test_token_ids_can_be_overridden():
    with StandinServer("sglang", model="my-prm") as server:
        reward = make_reward(server.url, api="sglang", reward_model_type="mistral", good_token_id=7,
                             bad_token_id=9, timeout=5)
        run(reward.score([SHEPHERD]))
        assert server.posts("/generate")[0]["token_ids_logprob"] == [7, 9]


# ---------------------------------------------------------------------------- vLLM /pooling


def test_vllm_pooling_request_is_the_documented_one():
    with StandinServer("vllm-pooling", model="Qwen/Qwen2.5-Math-PRM-7B") as server:
        reward = make_reward(server.url, reward_model_type="qwen", timeout=5)
        scores = run(reward.score([CHAT]))
        assert reward.api == "vllm"
        bodies = server.posts("/pooling")
    assert bodies == [{"model": "Qwen/Qwen2.5-Math-PRM-7B", "input": qwen_prm_text(CHAT)}]
    text = bodies[0]["input"]
    assert text.count("<extra_0>") == len(CHAT.steps)
    assert "## Step 1: add\n2+3=5<extra_0>Therefore" in text  # steps stripped, joined by <extra_0>
    assert text.startswith("<|im_start|>system\nPlease reason step by step")
    assert "<|im_start|>user\nWhat is 2+3?<|im_end|>" in text
    # the score is the last step's p_good
    last = text.rsplit("<extra_0>", 1)[0]
    assert scores[0] == pytest.approx(0.05 + 0.9 * unit("qwen", last), rel=1e-9)


def test_pooling_answer_parsing():
    resp = {"object": "list", "data": [{"index": 0, "object": "pooling", "data": [[0.2, 0.8], [0.6, 0.4]]}]}
    assert parse_pooling_score(resp) == pytest.approx(0.4)
    logits = {"data": [{"index": 0, "data": [[0.0, math.log(3.0)]]}]}  # use_activation off: logits
    assert parse_pooling_score(logits) == pytest.approx(0.75)
    with pytest.raises(BackendError, match="base64"):
        parse_pooling_score({"data": [{"index": 0, "data": "AAAA"}]})
    with pytest.raises(BackendError, match="no data"):
        parse_pooling_score({"object": "error", "message": "boom"})


def test_pooling_task_is_sent_when_asked():
    with StandinServer("vllm-pooling", model="prm") as server:
        reward = make_reward(server.url, api="vllm", reward_model_type="qwen", pooling_task="token_classify",
                             timeout=5)
        run(reward.score([CHAT]))
        assert server.posts("/pooling")[0]["task"] == "token_classify"


def test_vllm_wrong_model_names_url():
    with StandinServer("vllm-pooling", model="Qwen/Qwen2.5-Math-PRM-7B") as server:
        reward = make_reward(server.url, reward_model_type="qwen", model="Qwen/Qwen2.5-Math-PRM-72B", timeout=5)
        with pytest.raises(BackendError) as err:
            run(reward.start())
        assert server.url in str(err.value) and "Qwen2.5-Math-PRM-72B" in str(err.value)


def test_prm_5xx_retried():
    with StandinServer("vllm-pooling", model="prm", fail_first=2) as server:
        reward = make_reward(server.url, reward_model_type="qwen", timeout=5, backoff=0.01)
        assert len(run(reward.score([CHAT]))) == 1
        assert reward.pool.stats.retries == 2


def test_type_without_adapter_asks_for_reward_api():
    with StandinServer("vllm-pooling", model="prm") as server:
        reward = make_reward(server.url, reward_model_type="raw", timeout=5)
        with pytest.raises(BackendError, match="--reward_api"):
            run(reward.start())


def test_reward_server_gone_mid_run_names_url_after_retries():
    import time

    server = StandinServer("sglang", model="prm").start()
    reward = make_reward(server.url, reward_model_type="mistral", timeout=3, backoff=0.01, retries=2)
    assert len(run(reward.score([SHEPHERD]))) == 1
    server.stop()  # the server goes away
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        run(reward.score([SHEPHERD.child(" x ки")]))
    assert server.url + "/generate" in str(err.value) and "after 3 attempt(s)" in str(err.value)
    assert reward.pool.stats.retries == 2 and time.monotonic() - t0 < 5
