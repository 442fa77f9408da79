"""A real tree search on the CPU: `ets run` with no model server, on two real ASDiv problems.

The policy is SmolLM2-135M-Instruct in llama.cpp (in process), the PRM the
model-free arithmetic PRM (the CPU default), the diversity term of ETS the
shipped all-MiniLM-L6-v2. Everything loads from installed packages, offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("sentence_transformers")

from ets.backends.base import BackendError  # noqa: E402
from ets.cli import main  # noqa: E402

try:
    from ets import models
    from ets.backends.llamacpp import weights

    weights.default_policy_model_path()
    models.default_embedder_path()
    models.builtin_dataset_path("asdiv")
except BackendError as e:  # pragma: no cover - depends on the install
    pytest.skip(str(e), allow_module_level=True)


CPU_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cpu_ets.yaml"


def test_real_search_on_two_asdiv_problems(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "run", "--input_path", "asdiv", "--num_samples", "2", "--output_path", str(out / "answers.json"),
        "--width", "2", "--select_method", "softmax_costmodel",
        "--set", "lambdas=1.0", "--set", "lambdac=1.0",
        # small steps and budgets keep it to ~30 s; temperature 0.4 keeps the 135M model on the
        # format of its worked examples, so it reaches "Therefore, the final answer is" (seen with
        # seeds 0-3: every run found 2 answers per problem)
        "--set", "max_step_tokens=32", "--set", "max_tokens=520", "--set", "max_depth=10",
        "--set", "temperature=0.4", "--set", "seed=1", "--set", "num_threads=2",
        "--embed_device", "cpu", "--quiet",
    ])
    printed = capsys.readouterr()
    assert code == 0, printed.err

    # the reference's files
    answers = json.loads((out / "answers.json").read_text())
    assert [a["id"] for a in answers] == [0, 1]
    assert answers[0]["question"].startswith("Seven red apples")
    stats_log = (out / "stats.log").read_text().splitlines()
    assert [line.split(":")[0] for line in stats_log] == [
        "Total KV cache size", "Number of Model Calls", "Number of Tokens Generated", "Time"]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["prompt_format"] == "small_instruct"  # the CPU default
    assert "llama.cpp" in run["backends"]["policy"]["engine"]
    assert run["backends"]["reward"]["engine"] == "in-process, arithmetic"

    # the trees, and a score per step, each a probability
    calls = generated = 0
    leaves = 0
    for a in answers:
        tree = json.loads((out / "trees" / f"q{a['id']}.json").read_text())
        nodes = tree["nodes"]
        assert nodes[0]["parent_id"] is None and nodes[0]["depth"] == 0 and nodes[0]["score"] == 1.0
        assert nodes[0]["num_step_tokens"] > 100  # the real prompt's tokens
        for n in nodes[1:]:
            assert 0.0 <= n["score"] <= 1.0
            assert 1 <= n["num_step_tokens"] <= 32
        calls += len(nodes) - 1
        generated += sum(n["num_step_tokens"] for n in nodes[1:])
        by_id = {n["id"]: n for n in nodes}
        for traj in a["model_answer"]:
            leaves += 1
            scores = traj["step_scores"]
            assert len(scores) == len(traj["steps"]) >= 1  # one score per step
            assert all(0.0 <= s <= 1.0 for s in scores)
            assert traj["text"].endswith(traj["steps"][-1])
        for n in nodes:
            if n["leaf"]:
                assert by_id[n["parent_id"]]["leaf"] is False
        assert a["total_tokens"] == sum(n["num_step_tokens"] for n in nodes[1:])
    assert leaves >= 1, "the small model reached no final answer on either problem"

    # the statistics: counts agree with the trees, and the prefix cache was used
    s = run["stats"]
    assert s["model_calls"] == calls == int(stats_log[1].split(":")[1])
    assert s["tokens_generated"] == generated == int(stats_log[2].split(":")[1])
    assert s["kv_cache_size"] > 0
    assert s["prompt_tokens_computed"] > 0
    assert s["prompt_tokens_reused"] > 0
    # expansions after the first find their parent in the cache: most prompt tokens are reused
    assert s["prompt_tokens_reused"] > s["prompt_tokens_computed"]


def test_ets_run_with_one_seed_twice_gives_the_same_answers(tmp_path, capsys):
    """Every expansion draws from its node's own stream (tests/test_independent_draws.py), never keyed by
    when its request arrived: the same command twice writes the same answers.json."""
    texts = []
    for name in ("a", "b"):
        out = tmp_path / name / "answers.json"
        # one problem at a time: problems searched together share decoding batches as their timing falls,
        # and llama.cpp's logits move with a batch's make-up, enough to flip a sampled token now and then
        code = main(["run", "--input_path", "asdiv[0::20]", "--num_samples", "2", "--config", str(CPU_CONFIG),
                     "--width", "4", "--set", "max_step_tokens=24", "--set", "max_tokens=560",
                     "--set", "num_threads=1", "--set", "seed=7", "--output_path", str(out),
                     "--embed_device", "cpu", "--quiet"])
        assert code == 0, capsys.readouterr().err
        texts.append(out.read_bytes())
    assert texts[0] == texts[1]
    answers = json.loads(texts[0])
    assert [a["id"] for a in answers] == [0, 20] and all(a["model_answer"] for a in answers)


def test_the_larger_builtin_policy_solves_what_the_small_one_cannot(tmp_path, capsys):
    """Qwen2.5-Coder-0.5B by name (joined from its pieces), greedy, on the first two tuning problems:
    it solves both ("Seven red apples and two green apples": 9; the birds: 6), where SmolLM2-135M
    answers 28 and 2."""
    try:
        weights.builtin_policy_path("qwen2.5-coder-0.5b")
    except BackendError as e:  # pragma: no cover - depends on the install
        pytest.skip(str(e))
    out = tmp_path / "qwen"
    code = main(["run", "--input_path", "asdiv[0::20]", "--num_samples", "2", "--config", str(CPU_CONFIG),
                 "--policy_model", "qwen2.5-coder-0.5b", "--select_method", "best_of_n", "--width", "1",
                 "--set", "temperature=0", "--output_path", str(out / "answers.json"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    # the copy of its weights that decodes faster here (policy_weights: auto)
    assert run["backends"]["policy"]["model"] == str(weights.builtin_policy_path("qwen2.5-coder-0.5b"))
    assert run["backends"]["policy"]["model"].endswith((".f16.gguf", ".q8_0.gguf"))
    assert run["backends"]["reward"]["model"].endswith("weights fitted to qwen2.5-coder-0.5b")
    answers = json.loads((out / "answers.json").read_text())
    finals = [a["model_answer"][0]["steps"][-1] for a in answers]
    assert [f.strip() for f in finals] == ["Therefore, the final answer is: 9.", "Therefore, the final answer is: 6."]
