"""The in-process llama.cpp backends on the shipped CPU model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from ets.backends.base import BackendError, Context, Policy, Reward, SamplingParams  # noqa: E402
from ets.formats import get_format  # noqa: E402

try:
    from ets import models

    MODEL = models.stored_policy_path(models.DEFAULT_POLICY)
except BackendError as e:  # pragma: no cover - depends on the install
    pytest.skip(str(e), allow_module_level=True)

from ets.backends.llamacpp import (  # noqa: E402
    DEFAULT_FORMAT,
    LlamaCppPolicy,
    TokenLogitPRM,
    build_llamacpp_judge,
    load_model,
)
from ets.backends.llamacpp import weights  # noqa: E402
from ets.backends.llamacpp.engine import SlotEngine  # noqa: E402
from ets.backends.llamacpp.policy import _find_stop, _sample  # noqa: E402

FMT = get_format(DEFAULT_FORMAT)
QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have now?"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def policy():
    p = LlamaCppPolicy(n_ctx=4096, seed=1, n_batch_seqs=4)
    yield p
    p.close()


@pytest.fixture(scope="module")
def judge():
    j = build_llamacpp_judge(n_ctx=2048)
    yield j
    j.close()


def root() -> Context:
    return Context(QUESTION, FMT.prompt(QUESTION))


def params(**kw) -> SamplingParams:
    base = dict(temperature=0.7, max_tokens=24, stop=FMT.stop, seed=3)
    base.update(kw)
    return SamplingParams(**base)


def test_protocols(policy, judge):
    assert isinstance(policy, Policy)
    assert isinstance(judge, Reward)
    assert load_model() is policy.model is judge.model  # one model in memory, two contexts
    assert policy.engine.ctx is not judge.engine.ctx


def test_generate_k_steps_with_token_counts(policy):
    ctx = root()
    prompt_tokens = run(policy.count_tokens(ctx.text))
    assert prompt_tokens > 20
    steps = run(policy.generate(ctx, 3, params()))
    assert len(steps) == 3
    for s in steps:
        assert 1 <= s.num_tokens <= 24
        assert s.finish_reason in ("stop", "length")
        if s.finish_reason == "stop" and s.text:
            assert s.text.endswith("\n") and "\n" not in s.text[:-1]
    # one evaluation of the prefix, carried by the first sample
    assert steps[0].prompt_tokens_computed + steps[0].prompt_tokens_reused == prompt_tokens
    assert all(s.prompt_tokens_computed == 0 and s.prompt_tokens_reused == 0 for s in steps[1:])


def test_second_expansion_reuses_the_prefix(policy):
    ctx = Context(QUESTION + " Explain.", FMT.prompt(QUESTION + " Explain."))
    first = run(policy.generate(ctx, 2, params()))
    computed_before = policy.engine.prompt_tokens_computed
    again = run(policy.generate(ctx, 2, params(seed=4)))
    n = run(policy.count_tokens(ctx.text))
    assert first[0].prompt_tokens_computed > 0
    assert again[0].prompt_tokens_reused == n - 1  # everything but the last token, whose logits are needed
    assert again[0].prompt_tokens_computed == 1
    assert policy.engine.prompt_tokens_computed - computed_before == 1

    # a child's expansion finds its parent (and most of its own step) in the cache
    child = ctx.child(first[0].text or "Tom has 3 apples.\n")
    steps = run(policy.generate(child, 2, params()))
    assert steps[0].prompt_tokens_reused >= n - 1
    assert steps[0].prompt_tokens_computed <= run(policy.count_tokens(child.text)) - (n - 1)


def test_greedy_children_match_a_fresh_single_sequence(policy):
    """Children decoded as one batch of sequences sharing the prefix's cells
    give what a lone sequence gives (greedy, so the samples are deterministic)."""
    ctx = Context("What is 12 times 4?", FMT.prompt("What is 12 times 4?"))
    p = params(temperature=0.0, max_tokens=16)
    batched = run(policy.generate(ctx, 3, p))
    assert len({s.text for s in batched}) == 1
    lone = LlamaCppPolicy(n_ctx=1024, n_batch_seqs=1, share_prefix=False)
    try:
        single = run(lone.generate(ctx, 1, p))
    finally:
        lone.close()
    assert single[0].text == batched[0].text
    assert single[0].num_tokens == batched[0].num_tokens


def test_length_limit_and_many_children_in_groups(policy):
    steps = run(policy.generate(root(), 6, params(max_tokens=3, stop=())))  # 6 children, groups of 4
    assert len(steps) == 6
    assert all(s.num_tokens <= 3 for s in steps)
    assert any(s.finish_reason == "length" for s in steps)


def test_concurrent_requests_are_serialised(policy):
    async def many():
        ctxs = [Context(q, FMT.prompt(q)) for q in ("What is 1+1?", "What is 2+2?", "What is 3+3?")]
        return await asyncio.gather(*(policy.generate(c, 2, params(max_tokens=8)) for c in ctxs))

    out = run(many())
    assert [len(x) for x in out] == [2, 2, 2]


def test_small_cache_evicts_instead_of_failing():
    p = LlamaCppPolicy(n_ctx=512, n_slots=4, n_batch_seqs=2)  # also: children wait for a free slot
    try:
        for q in ("What is 1+1?", "What is 7+8?", "What is 9 times 9?", "What is 100-1?", "What is 5/5?"):
            steps = run(p.generate(Context(q, FMT.prompt(q)), 2, params(max_tokens=16)))
            assert len(steps) == 2
        assert p.engine.cells_used() <= 512
        long_question = "Add these numbers: " + " + ".join(str(i) for i in range(400))
        with pytest.raises(BackendError, match="n_ctx"):  # a prompt longer than the whole cache
            run(p.generate(Context(long_question, FMT.prompt(long_question)), 2, params(max_tokens=4)))
        steps = run(p.generate(root(), 2, params(max_tokens=4)))  # and the policy still works after it
        assert len(steps) == 2
    finally:
        p.close()


def test_siblings_appending_the_same_token_share_one_batch_row():
    """Forked slots that append the same token are decoded once; after they part, each sequence's
    logits are what that sequence alone gives, and emptying one sibling leaves the others whole. On the
    16-bit copy, whose products are the least sensitive to a batch's make-up (8-bit blocks round each row's
    activations too)."""
    model = load_model(weights.builtin_policy_path("smollm2-135m", "f16"))
    prompt = "Tom has 3 apples and buys 5 more. How many"
    eng = SlotEngine(model, n_ctx=1024, n_slots=6, n_threads=2)
    try:
        a, b = (eng.tokenize(word, add_bos=False)[0] for word in (" apples", " more"))
        paths = [[a, a, a, b], [a, a, b, a], [a, b, a, a]]
        base, *_ = eng.prepare(eng.tokenize(prompt))
        kids = eng.fork(base, 3, {base})
        rows = []
        for depth in range(3):
            before = eng.tokens_shared
            logits = eng.decode_next([(k, path[depth]) for k, path in zip(kids, paths)])
            rows.append(3 - (eng.tokens_shared - before))
        assert rows == [1, 2, 3]  # all alike; two alike; all apart
        eng.clear(kids[0])  # the first sibling evicted: the cells it shared stay with the others
        last = eng.decode_next([(k, path[3]) for k, path in zip(kids[1:], paths[1:])])
        for got, tokens in [(logits[0], paths[0][:3]), (last[0], paths[1]), (last[1], paths[2])]:
            alone = SlotEngine(model, n_ctx=512, n_slots=2, n_threads=2)
            try:
                *_, want = alone.prepare(eng.tokenize(prompt) + tokens)
            finally:
                alone.close()
            assert int(np.argmax(got)) == int(np.argmax(want))
            assert np.abs(got - want).max() < 0.25  # batched arithmetic differs in the last bits only
    finally:
        eng.close()


def test_a_prompt_copies_its_prefix_from_a_busy_slot_and_leaves_it_whole():
    """Prompts admitted together (greedy's problems) share their few-shot prefix: the second copies it from
    the first's slot while that slot is busy (protected), which keeps its tokens, and gets the logits a
    fresh evaluation gives."""
    model = load_model(weights.builtin_policy_path("smollm2-135m", "f16"))
    shared = "You solve problems step by step. Tom has 3 apples and buys 5 more."
    first, second = (shared + ending for ending in (" How many apples?", " How many are left?"))
    eng = SlotEngine(model, n_ctx=1024, n_slots=4, n_threads=2)
    try:
        busy, computed, reused, _ = eng.prepare(eng.tokenize(first))
        assert reused == 0 and computed == len(eng.tokenize(first))
        held = list(eng.slots[busy].tokens)
        slot, computed, reused, logits = eng.prepare(eng.tokenize(second), protect={busy})
        prefix = len(eng.tokenize(shared))
        assert slot != busy and reused >= prefix - 1 and computed == len(eng.tokenize(second)) - reused
        assert eng.slots[busy].tokens == held  # the busy slot is neither trimmed nor cleared
        alone = SlotEngine(model, n_ctx=512, n_slots=1, n_threads=2)
        try:
            want = alone.prepare(eng.tokenize(second))[3]
        finally:
            alone.close()
        assert int(np.argmax(logits)) == int(np.argmax(want)) and np.abs(logits - want).max() < 0.25
    finally:
        eng.close()


def test_judge_scores_are_probabilities(judge):
    ctx = root()
    good = ctx.child("Tom has 3 + 5 = 8 apples.\n")
    bad = ctx.child("Tom has 3 * 5 = 99 apples.\n")
    deeper = good.child("Therefore, the final answer is: 8.\n")
    scores = run(judge.score([good, bad, deeper]))
    assert len(scores) == 3
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert run(judge.score([ctx])) == [None]  # no step to score
    # siblings share the judge's prompt up to the newest step
    before = judge.engine.prompt_tokens_reused
    run(judge.score([ctx.child("Tom buys 5 more apples.\n")]))
    assert judge.engine.prompt_tokens_reused - before > 50


def test_judge_render_modes():
    shepherd = TokenLogitPRM(format="llemma", n_ctx=512, n_slots=1)
    try:
        assert shepherd.mode == "step_tag"
        ctx = Context("1+1?", "1+1?\n", ("Step 1: 1+1=2 ки", "\nThe answer is: 2"))
        text = shepherd.render(ctx)
        assert text.endswith("The answer is: 2 ки") and text.startswith("1+1?\n")
        assert 0.0 <= run(shepherd.score([ctx]))[0] <= 1.0
    finally:
        shepherd.close()
    rlhf = TokenLogitPRM(format="llama", n_ctx=512, n_slots=1)
    try:
        assert rlhf.mode == "rlhflow"
        ctx = Context("1+1?", "<prompt>", ("## Step 1: add\n\n", "Therefore, the final answer is: $\\boxed{2}$."))
        text = rlhf.render(ctx)
        assert text.count("<|start_header_id|>user<|end_header_id|>") == 2
        assert "1+1? ## Step 1: add<|eot_id|>" in text
        assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
        assert text.count("+<|eot_id|>") == 1
    finally:
        rlhf.close()


def _load_sampling_bench():
    spec = importlib.util.spec_from_file_location("bench_sampling", Path(__file__).parents[1] / "bench" / "sampling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("temperature", [0.1, 0.4, 1.0])
def test_two_level_sampler_draws_what_the_full_inverse_cdf_draws(temperature):
    full_vocabulary_sample = _load_sampling_bench().full_vocabulary_sample  # the definition, as the bench has it
    # a vocabulary the size of Qwen's, logits spread as a model's are (a few dominant tokens, a long tail)
    gen = np.random.default_rng(7)
    for trial in range(40):
        logits = (gen.normal(size=151_936) * 4).astype(np.float32)
        logits[gen.integers(0, len(logits), 5)] += 30
        seed = int(gen.integers(1 << 30))
        u = np.random.default_rng(seed).random()
        assert _sample(logits, temperature, np.random.default_rng(seed)) == \
            full_vocabulary_sample(logits, temperature, u), trial


def test_sampler_frequencies_follow_the_softmax():
    logits = np.array([2.0, 1.0, 0.0, -1.0, -30.0] + [-200.0] * 3000, dtype=np.float32)
    rng = np.random.default_rng(3)
    counts = np.bincount([_sample(logits, 0.7, rng) for _ in range(20_000)], minlength=len(logits))
    p = np.exp(logits[:4].astype(np.float64) / 0.7)
    p /= p.sum()
    expected = 20_000 * p
    assert counts[4:].sum() == 0
    assert np.all(np.abs(counts[:4] - expected) < 5 * np.sqrt(expected))  # 5 sigma
    assert _sample(logits, 0.0, rng) == 0


def test_find_stop():
    assert _find_stop("abc\ndef", ("\n",)) == 4
    assert _find_stop("abc", ("\n",)) is None
    assert _find_stop("a\n\nb", ("\n\n", "\n")) == 2
    assert _find_stop("x ки y", ("ки",)) == 4


@pytest.mark.parametrize("fmt, kind", [("f16", "F16"), ("q8_0", "Q8_0")])
def test_a_copy_of_the_weights_computes_what_the_stored_weights_compute(tmp_path, monkeypatch, fmt, kind):
    """A built-in policy computes with a 16-bit or 8-bit copy of its stored 4-bit weights
    (docs/cpu-models.md#weights): written once into the cache folder, and the same model: next-token
    logits within rounding of the stored file's, the same greedy token."""
    monkeypatch.setenv("ETS_CACHE_DIR", str(tmp_path))
    copy = weights.builtin_policy_path("smollm2-135m", fmt)
    assert copy.parent == tmp_path and copy.name == f"SmolLM2-135M-Instruct.Q4_1.{fmt}.gguf"
    written = copy.stat().st_mtime_ns
    assert weights.builtin_policy_path("smollm2-135m", fmt) == copy and copy.stat().st_mtime_ns == written  # not again
    stored = weights.builtin_policy_path("smollm2-135m", "stored")
    assert stored == MODEL and stored.name == "SmolLM2-135M-Instruct.Q4_1.gguf"  # the shipped file, as it is
    copied, four_bit = load_model(copy), load_model(stored)
    assert kind in copied.desc() and "Q4_1" in four_bit.desc()
    assert copied.n_params() == four_bit.n_params()
    logits = []
    for model in (copied, four_bit):
        engine = SlotEngine(model, n_ctx=1024, n_slots=1, n_threads=1)
        try:
            logits.append(engine.prepare(engine.tokenize(FMT.prompt(QUESTION)))[3])
        finally:
            engine.close()
    a, b = logits
    assert np.argmax(a) == np.argmax(b)
    assert np.corrcoef(a, b)[0, 1] > 0.999
    assert np.abs(a - b).max() < 0.05 * (b.max() - b.min())


def test_auto_weights_time_both_copies_once_a_machine_and_take_the_faster(tmp_path, monkeypatch, capsys):
    """policy_weights: auto (the default) times a call of 8 sequences on each copy, twice, alternately; takes the
    8-bit copy only when it is at least 1.1x faster; remembers the choice in the cache folder's weights.json,
    so a later run does not time again; and times again when that record is damaged."""
    monkeypatch.setenv("ETS_CACHE_DIR", str(tmp_path))
    timed = []
    speeds = {"f16": 100.0, "q8_0": 95.0}  # ms a call: the 8-bit copy 1.05x faster, inside the margin

    def fake_decode_ms(path, *, rows):
        fmt = Path(path).name.split(".")[-2]
        timed.append((fmt, rows))
        return speeds[fmt] + len(timed)  # each try a little slower: the fastest try is each copy's first

    monkeypatch.setattr(weights, "decode_ms", fake_decode_ms)
    chosen = weights.builtin_policy_path("smollm2-135m")
    assert chosen.name == "SmolLM2-135M-Instruct.Q4_1.f16.gguf"  # 101 ms against 97: not 1.1x
    assert timed == [("f16", 8), ("q8_0", 8), ("f16", 8), ("q8_0", 8)]
    record = json.loads((tmp_path / "weights.json").read_text())
    (key, entry), = record.items()
    assert key.startswith("SmolLM2-135M-Instruct.Q4_1.gguf size=") and entry == {"choice": "f16", "ms_per_call": {"f16": 101.0, "q8_0": 97.0},
                                                              "rows": 8}
    assert "computes with its f16 copy here" in capsys.readouterr().err
    assert weights.builtin_policy_path("smollm2-135m") == chosen and len(timed) == 4  # remembered, not timed again

    (tmp_path / "weights.json").write_text("{not json")
    speeds["q8_0"] = 80.0  # now 1.25x faster
    assert weights.builtin_policy_path("smollm2-135m").name == "SmolLM2-135M-Instruct.Q4_1.q8_0.gguf"
    assert len(timed) == 8 and json.loads((tmp_path / "weights.json").read_text())[key]["choice"] == "q8_0"
    assert weights.choose_weights({"f16": 110.0, "q8_0": 100.0}) == "q8_0"  # the margin itself counts as faster


def test_decode_ms_times_a_real_batch(tmp_path, monkeypatch):
    """What auto measures, on the real stored SmolLM2: a positive time a call, more for more sequences."""
    one, sixteen = weights.decode_ms(MODEL, rows=1), weights.decode_ms(MODEL, rows=16)
    assert 0 < one < sixteen


def test_missing_model_file_is_a_backend_error(tmp_path):
    with pytest.raises(BackendError):
        LlamaCppPolicy(model_path=tmp_path / "nope.gguf")
