"""Particle filtering (select_method: particle_filtering): the paper's resampling weights on hand-computed
numbers, a draw that depends on (seed, problem, depth) and nothing else, children counts that add up to
the remaining width and follow the weights, and whole scripted searches through ``ets run`` that
``ets report`` and ``ets view`` read."""

from __future__ import annotations

import json
import math
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from ets.cli import main
from ets.config import ConfigError, SearchConfig
from ets.selection import allocate
from ets.selection.common import SelectionParams
from ets.selection.particle_filtering import SCORE_CLIP, log_weights, resampling_weights
from ets.tree import Tree
from ets.view.data import replay

PF = "particle_filtering"


def depth_one_tree(scores: list[float]) -> Tree:
    tree = Tree.with_root("Q: ", 2)
    for i, s in enumerate(scores):
        tree.add_child(0, f"step {i}.\n", s, 3)
    return tree


def params(seed=7, problem_id=3, temperature=1.0) -> SelectionParams:
    return SelectionParams(pf_temperature=temperature, seed=seed, problem_id=problem_id)


# --- the weights ---

def test_weights_are_the_softmax_of_the_score_logits():
    # logit(0.5) = 0, logit(0.8) = ln 4, logit(0.2) = -ln 4: the odds 1, 4, 1/4 over their sum 5.25
    assert resampling_weights([0.5, 0.8, 0.2], 1.0) == pytest.approx([1 / 5.25, 4 / 5.25, 0.25 / 5.25], rel=1e-12)
    # at temperature 0.5 the odds are squared: 1, 16, 1/16 over 17.0625
    assert resampling_weights([0.5, 0.8, 0.2], 0.5) == pytest.approx([1 / 17.0625, 16 / 17.0625, 0.0625 / 17.0625], rel=1e-12)
    # at temperature 2, their square roots: 1, 2, 1/2 over 3.5
    assert resampling_weights([0.5, 0.8, 0.2], 2.0) == pytest.approx([1 / 3.5, 2 / 3.5, 0.5 / 3.5], rel=1e-12)
    assert log_weights([0.5, 0.8], 1.0) == pytest.approx([0.0, math.log(4)], abs=1e-12)


def test_scores_of_zero_and_one_are_clipped_not_infinite():
    w = resampling_weights([0.0, 1.0, 0.5], 1.0)
    odds_one = (1 - SCORE_CLIP) / SCORE_CLIP  # logit(1 - 1e-7) = ln(1e7 - 1)
    total = 1 / odds_one + odds_one + 1
    assert w == pytest.approx([1 / odds_one / total, odds_one / total, 1 / total], rel=1e-9)
    assert np.isfinite(w).all()


def test_a_score_outside_zero_one_is_refused_naming_the_node():
    tree = depth_one_tree([0.5, 1.5])
    with pytest.raises(ValueError, match=r"node 2 has PRM score 1.5, outside \[0, 1\]"):
        allocate(PF, tree, [1, 2], 4, params())


# --- the draw ---

TREE_SCORES = [0.3, 0.9, 0.6, 0.75, 0.1]


def test_a_fixed_seed_gives_a_fixed_resampling():
    tree = depth_one_tree(TREE_SCORES)
    got = allocate(PF, tree, [1, 2, 3, 4, 5], 16, params(seed=7, problem_id=3))
    # pinned: the draw of (seed 7, problem 3, depth 1); a change of the keying or of the weights changes it
    assert got == {1: 0, 2: 11, 3: 4, 4: 1, 5: 0}
    assert list(got) == [1, 2, 3, 4, 5]  # every candidate, in candidate order (the expansion order)
    # the same from a fresh thread, after other problems' and other depths' draws
    for pid in range(5):
        allocate(PF, tree, [1, 2, 3, 4, 5], 16, params(seed=7, problem_id=pid))
    again = {}
    thread = threading.Thread(target=lambda: again.update(allocate(PF, tree, [1, 2, 3, 4, 5], 16, params(seed=7, problem_id=3))))
    thread.start()
    thread.join()
    assert again == got


def test_another_seed_problem_or_depth_draws_anew():
    tree = depth_one_tree(TREE_SCORES)
    cands = [1, 2, 3, 4, 5]
    base = allocate(PF, tree, cands, 16, params(seed=7, problem_id=3))
    assert allocate(PF, tree, cands, 16, params(seed=8, problem_id=3)) != base
    assert allocate(PF, tree, cands, 16, params(seed=7, problem_id=4)) != base
    # the same candidates' scores one depth lower: another depth's draw
    deeper = Tree.with_root("Q: ", 2)
    deeper.add_child(0, "a.\n", 0.5, 1)
    for i, s in enumerate(TREE_SCORES):
        deeper.add_child(1, f"step {i}.\n", s, 3)
    assert list(allocate(PF, deeper, [2, 3, 4, 5, 6], 16, params(seed=7, problem_id=3)).values()) != list(base.values())
    # no seed is seed 0, not a fresh draw each time
    assert allocate(PF, tree, cands, 16, params(seed=None)) == allocate(PF, tree, cands, 16, params(seed=0))


def test_counts_add_up_to_the_remaining_width():
    rng = random.Random(5)
    for trial in range(200):
        n = rng.randint(1, 12)
        tree = depth_one_tree([rng.random() for _ in range(n)])
        remaining = rng.randint(0, 40)
        got = allocate(PF, tree, list(range(1, n + 1)), remaining, params(seed=trial, problem_id=trial % 7))
        assert list(got) == list(range(1, n + 1))
        assert all(k >= 0 for k in got.values())
        assert sum(got.values()) == remaining


def test_counts_follow_the_weights_on_average():
    """Over many problems' draws a candidate's mean number of children is W times its weight."""
    scores, width, draws = [0.5, 0.8, 0.2, 0.95], 32, 3000
    tree = depth_one_tree(scores)
    totals = np.zeros(len(scores))
    for pid in range(draws):
        totals += list(allocate(PF, tree, [1, 2, 3, 4], width, params(seed=1, problem_id=pid)).values())
    expected = width * resampling_weights(scores, 1.0)
    # multinomial standard error of each mean: sqrt(W p (1 - p) / draws) <= 0.05 here; 5 of them
    assert totals / draws == pytest.approx(expected, abs=0.25)


def test_the_root_gives_every_particle_its_first_step():
    tree = Tree.with_root("Q: ", 2)
    assert allocate(PF, tree, [0], 8, params()) == {0: 8}


# --- the config ---

def test_config_keys():
    config = SearchConfig.from_dict({"select_method": PF, "pf_temperature": 0.5, "seed": 11, "width": 4})
    p = SelectionParams.from_config(config, problem_id="q9")
    assert (p.pf_temperature, p.seed, p.problem_id) == (0.5, 11, "q9")
    assert SearchConfig().pf_temperature == 1.0
    with pytest.raises(ConfigError, match="pf_temperature: must be > 0.0"):
        SearchConfig.from_dict({"pf_temperature": 0})
    with pytest.raises(ConfigError, match="did you mean 'pf_temperature'"):
        SearchConfig.from_dict({"pf_temprature": 1.0})
    assert SearchConfig.from_yaml(Path(__file__).parents[1] / "configs" / "particle_filtering.yaml").select_method == PF


# --- whole searches ---

QUESTIONS = [(f"Ann has {n} pens and gets {n % 4} more. How many pens?", str(n + n % 4))
             for n in range(1, 9) if n + n % 4 < 10]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pf_runs")
    data = root / "digits.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS), encoding="utf-8")
    out = {}
    for name, seed, threads in (("a", 5, 1), ("again", 5, 4), ("other", 6, 4)):
        out[name] = root / name
        assert main(["run", "--scripted", "--input_path", str(data), "--width", "6", "--select_method", PF,
                     "--set", f"seed={seed}", "--set", f"num_threads={threads}",
                     "--output_path", str(out[name] / "answers.json"), "--quiet"]) == 0
    return out


def trees(run: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((run / "trees").glob("q*.json"))]


def test_a_search_resamples_as_the_allocator_draws(runs):
    """Every depth of every problem: the children each candidate got are the allocator's draw for
    that problem's id, and the counts add up to the remaining width."""
    checked = 0
    for saved in trees(runs["a"]):
        config = SearchConfig.from_dict(saved["fingerprint"]["config"])
        assert config.select_method == PF
        tree = Tree.from_nodes(saved["nodes"])
        for s in replay(tree, saved["fingerprint"]["config"]):
            drawn = allocate(PF, tree, s.candidates, s.width_left, SelectionParams.from_config(config, saved["answer"]["id"]))
            assert s.allocation == [drawn[c] for c in s.candidates]
            assert sum(s.allocation) == s.width_left
            checked += 1
        assert saved["answer"]["model_answer"], "a search finished no trajectory"
    assert checked > 10


def test_the_same_seed_gives_the_same_trees_whatever_the_threads(runs):
    same = [[n["id"], n["parent_id"], n["text"]] for t in trees(runs["a"]) for n in t["nodes"]]
    assert same == [[n["id"], n["parent_id"], n["text"]] for t in trees(runs["again"]) for n in t["nodes"]]
    assert same != [[n["id"], n["parent_id"], n["text"]] for t in trees(runs["other"]) for n in t["nodes"]]


def test_evaluate_report_and_view_accept_the_run(runs, tmp_path, capsys):
    run = runs["a"]
    capsys.readouterr()
    assert main(["evaluate", "--path", str(run), "--all", "--json", "--model_type", "raw"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated
    assert main(["report", str(run), str(runs["other"]), "-o", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "particle filtering width 6" in table
    assert main(["view", str(run), "-o", str(tmp_path / "pf.html")]) == 0
    page = (tmp_path / "pf.html").read_text(encoding="utf-8")
    assert "particle_filtering" in page or "particle filtering" in page
