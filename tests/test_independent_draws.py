"""Every expansion draws from a random stream of its own, keyed by its node's place in the search
(``SamplingParams.stream``), not by its text: two nodes on one path get independent children, in
process and over HTTP (the same run twice: tests/test_cpu_integration.py)."""

from __future__ import annotations

import asyncio

import pytest

from ets.backends.base import BackendError, Context, SamplingParams, draw_stream, request_seed
from ets.backends.http import make_policy
from ets.backends.scripted import toy_world
from ets.config import SearchConfig
from ets.search import search
from standins.servers import StandinServer, run


def test_streams_and_seeds_are_stable_and_per_node():
    assert draw_stream(3, 7) == draw_stream(3, 7)  # a hash, not Python's salted hash()
    assert len({draw_stream(p, n) for p in (0, 1, "0") for n in range(50)}) == 150
    assert request_seed(5, None, 2) == 7  # no stream (a caller outside the search): seed + index, as before
    seeds = {request_seed(5, draw_stream(0, n), i) for n in range(20) for i in range(4)}
    assert len(seeds) == 80 and all(0 <= s < 2**31 for s in seeds)
    assert request_seed(5, draw_stream(0, 1)) != request_seed(6, draw_stream(0, 1))


# ---------------------------------------------------------------------------- over HTTP

CTX = Context("What is 2+3?", "What is 2+3?", ())


def _params(stream: int | None, seed: int | None = 3) -> SamplingParams:
    return SamplingParams(temperature=0.7, max_tokens=16, stop=("\n",), seed=seed, stream=stream)


@pytest.mark.parametrize("ignore_n", [False, True])
def test_http_seed_differs_between_two_nodes_with_one_text(ignore_n):
    """One text expanded for node 1, node 2, then node 1 again: nodes 1 and 2 are sent different seeds
    (a server honouring the seed, as vLLM does, draws different children), node 1 the same ones twice;
    with a server answering one choice, every sample's request its own seed."""
    with StandinServer("openai", model="m", ignore_n=ignore_n) as server:
        policy = make_policy(server.url, model="m", timeout=5)

        async def go():
            return [await policy.generate(CTX, 3, _params(draw_stream(0, node))) for node in (1, 2, 1)]

        one, two, again = run(go())
        posts = [b for b in server.posts("/v1/completions") if "n" in b]
    # the same number of requests a node (one, or one a sample); a node's requests run concurrently
    by_node = [sorted(b["seed"] for b in posts[i * len(posts) // 3:(i + 1) * len(posts) // 3]) for i in range(3)]
    assert by_node[0] == by_node[2] and not set(by_node[0]) & set(by_node[1])
    assert len(set(by_node[0] + by_node[1])) == len(by_node[0]) * 2  # n = 1 requests: one seed each
    assert [s.text for s in one] == [s.text for s in again]


def _same_first_step(server: StandinServer) -> None:
    """Every child of the root says the same step, so the second round expands one text several times."""
    answer = server.openai_completions

    def completions(body: dict):
        status, payload = answer(body)
        if status == 200 and body["prompt"] == CTX.text:
            for choice in payload["choices"]:
                choice.update(text="Let x be 2.\n", finish_reason="stop")
                if choice.get("logprobs"):
                    choice["logprobs"]["tokens"] = ["Let", "x", "be", "2.\n"]
        return status, payload

    server.openai_completions = completions


def _search_over_http(seed: int | None) -> tuple[list[dict], list]:
    with StandinServer("openai", model="m") as server:
        _same_first_step(server)
        config = SearchConfig(width=4, select_method="softmax", policy_model_type="raw", max_step_tokens=16,
                              max_tokens=200, max_depth=4, seed=seed)
        policy = make_policy(server.url, model="m", timeout=5)
        result = run(search(CTX.question, config, policy=policy, reward=toy_world()[1], problem_id=0))
        return [b for b in server.posts("/v1/completions") if "n" in b], result.answers


def test_http_search_sends_each_node_its_own_seed_the_same_in_every_run():
    posts, answers = _search_over_http(seed=1)
    second = [b for b in posts if b["prompt"] == CTX.text + "Let x be 2.\n"]
    assert len(second) >= 2  # the four identical children of the root: several expanded
    assert len({b["seed"] for b in second}) == len(second)  # ... each with its own seed
    again_posts, again = _search_over_http(seed=1)
    # the requests of a round run concurrently: compare them as a set, and the answers as they are
    assert sorted((b["prompt"], b["seed"]) for b in again_posts) == sorted((b["prompt"], b["seed"]) for b in posts)
    assert again == answers
    unseeded, _ = _search_over_http(seed=None)
    assert unseeded and all("seed" not in b for b in unseeded)  # no config seed: none sent, as before


# ---------------------------------------------------------------------------- in process, llama.cpp


@pytest.fixture(scope="module")
def policy():
    pytest.importorskip("llama_cpp")
    from ets.backends.llamacpp import LlamaCppPolicy, weights

    try:
        # the 16-bit copy: the least sensitive to which sequences share a batch (test_llamacpp.py)
        path = weights.builtin_policy_path("smollm2-135m", "f16")
    except BackendError as e:  # pragma: no cover - depends on the install
        pytest.skip(str(e))
    p = LlamaCppPolicy(path, n_ctx=2048, seed=1, n_batch_seqs=8, n_threads=2)
    yield p
    p.close()


def _root() -> Context:
    question = "Tom has 3 apples and buys 5 more. How many apples does he have now?"
    return Context(question, f"Question: {question}\nAnswer step by step.\n")  # short: quick to evaluate


def _llama_params(stream: int | None) -> SamplingParams:
    return SamplingParams(temperature=0.7, max_tokens=12, stop=("\n",), seed=3, stream=stream)


def _children(policy, context: Context, stream: int | None, k: int = 4) -> list[str]:
    return [s.text for s in asyncio.run(policy.generate(context, k, _llama_params(stream)))]


def _fresh_children(policy, context: Context, stream: int | None) -> list[str]:
    """Children drawn in an emptied cache. llama.cpp's logits move with the cache's layout and a batch's
    make-up (a prompt evaluated whole or its last token alone: up to 0.03 apart), enough to flip a token
    at temperature 0.7 now and then; the same draws give the same children only in the same state."""
    with policy.engine.lock:
        for sid in range(policy.engine.n_slots):
            policy.engine.clear(sid)
    return _children(policy, context, stream)


def test_llamacpp_one_text_under_two_node_keys_draws_independent_children(policy):
    """Keyed by the text (before), all six lists were the same; now they agree only as often as
    independent samples do, and one node's key drawn again gives its children again."""
    ctx = _root()
    lists = [_fresh_children(policy, ctx, draw_stream(0, node)) for node in range(1, 7)]
    assert sum(other == lists[0] for other in lists[1:]) <= 1
    assert len({tuple(x) for x in lists}) >= 5
    assert _fresh_children(policy, ctx, draw_stream(0, 1)) == lists[0]


def test_llamacpp_rows_are_shared_while_draws_agree(policy):
    """Children in one state share a batch row, whichever request they belong to, and part where their
    draws differ. One node's request made twice at once: in one state all along, so the second decodes
    every token on the first's rows and gets the same children. Two nodes with the same text: they share
    less (only while their draws agree) and get different children."""
    ctx = _root()
    p1, p2 = (_llama_params(draw_stream(0, node)) for node in (1, 2))

    def together(a: SamplingParams, b: SamplingParams):
        # the prompt in two slots first, so both requests evaluate only its last token, alike
        _fresh_children(policy, ctx, draw_stream(0, 0))
        shared = policy.engine.tokens_shared

        async def both():  # one loop iteration's requests reach the scheduler together, as a round's do
            return await asyncio.gather(policy.generate(ctx, 4, a), policy.generate(ctx, 4, b))

        return asyncio.run(both()), policy.engine.tokens_shared - shared

    (first, second), shared_one_node = together(p1, p1)
    assert [s.text for s in first] == [s.text for s in second]
    assert shared_one_node >= sum(s.num_tokens - 1 for s in second)  # a child's last token is never decoded

    (one, two), shared_two_nodes = together(p1, p2)
    assert [s.text for s in one] != [s.text for s in two]
    assert 0 < shared_two_nodes < shared_one_node
