"""bench/methods.py --quick: every method through the same engine, and a table that agrees with its raw figures."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from ets.evaluate import evaluate_settings, load_answers
from ets.evaluate.intervals import paired_difference, ratio_interval, wilson_interval

BENCH = Path(__file__).resolve().parents[1] / "bench" / "methods.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_methods", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_paired_difference_matches_the_normal_approximation_at_scale():
    # 1000 problems: 600 both right, 150 only a, 50 only b, 200 neither
    a = [True] * 600 + [True] * 150 + [False] * 50 + [False] * 200
    b = [True] * 600 + [False] * 150 + [True] * 50 + [False] * 200
    diff, low, high = paired_difference(a, b)
    assert diff == pytest.approx(0.1)
    n, only_a, only_b = 1000, 150, 50
    se = math.sqrt((only_a + only_b) / n**2 - (only_a - only_b) ** 2 / n**3)
    assert low == pytest.approx(0.1 - 1.96 * se, abs=0.004) and high == pytest.approx(0.1 + 1.96 * se, abs=0.004)
    # identical runs: no difference, and a narrow interval around it
    same = paired_difference(a, a)
    assert same[0] == 0 and -0.01 < same[1] <= 0 <= same[2] < 0.01
    with pytest.raises(ValueError, match="same problems"):
        paired_difference(a, b[:10])


def test_ratio_interval_by_hand():
    # R = 6 / 6 = 1; residuals -1, 0, 1 (variance 1); se = sqrt(1 / 3) / mean denominator 2
    ratio, low, high = ratio_interval([1, 2, 3], [2, 2, 2])
    half = 1.959963984540054 * math.sqrt(1 / 3) / 2
    assert ratio == 1 and low == pytest.approx(1 - half) and high == pytest.approx(1 + half)
    # costs in a fixed proportion on every problem: the ratio is known exactly, however the problems vary
    assert ratio_interval([7, 70, 700], [10, 100, 1000]) == pytest.approx((0.7, 0.7, 0.7))
    with pytest.raises(ValueError, match="same problems"):
        ratio_interval([1, 2], [1])


def test_quick_table_agrees_with_its_raw_figures(tmp_path, capsys):
    result = load_bench().main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    rows = {(r["method"], r["width"]): r for r in result["rows"]}
    assert set(m for m, _ in rows) == {"greedy", "best_of_n", "ets", "ets_no_diversity", "rebase", "beam_search", "dvts",
                                          "particle_filtering"}
    assert {w for m, w in rows if m != "greedy"} == {4, 8}
    for (method, width), row in rows.items():
        run = Path(row["run"])
        stats = json.loads((run / "run.json").read_text())["stats"]
        for key in ("kv_cache_size", "tokens_generated", "model_calls"):
            assert row[key] == stats[key], (method, width, key)
        assert row["tokens_per_s"] == pytest.approx(stats["tokens_generated"] / stats["time"])
        # accuracies are the evaluator's on the run's own answers.json
        answers = load_answers(run / "answers.json")
        evaluated = evaluate_settings(answers, ["majority_vote/weighted/last", "best_of_n/last"], "raw")
        assert row["vote_accuracy"] == evaluated["majority_vote/weighted/last"].accuracy
        assert row["best_accuracy"] == evaluated["best_of_n/last"].accuracy
        assert tuple(row["vote_ci"]) == wilson_interval(evaluated["majority_vote/weighted/last"].num_correct, len(answers))
    for entry in result["ratios_to_rebase"]:
        row, rebase = rows[(entry["method"], entry["width"])], rows[("rebase", entry["width"])]
        for key in ("kv_cache_size", "tokens_generated", "model_calls", "time"):
            assert entry[f"{key}_ratio"] == pytest.approx(row[key] / rebase[key])
        assert entry["vote_points"] == pytest.approx(100 * (row["vote_accuracy"] - rebase["vote_accuracy"]))
        # the KV ratio's interval is paired over the problems' own figures, which add up to the run's
        ets_kv, rebase_kv = (load_bench().kv_by_problem(Path(x["run"])) for x in (row, rebase))
        assert sum(ets_kv.values()) == row["kv_cache_size"] and sum(rebase_kv.values()) == rebase["kv_cache_size"]
        ids = sorted(rebase_kv)
        ratio, low, high = ratio_interval([ets_kv[i] for i in ids], [rebase_kv[i] for i in ids])
        assert ratio == pytest.approx(entry["kv_cache_size_ratio"]) and entry["kv_cache_size_ci"] == [low, high]
        # the printed table carries the same ratio and interval
        assert f"{entry['kv_cache_size_ratio']:.2f}x [{low:.2f}, {high:.2f}]" in printed
    assert len(result["ratios_to_rebase"]) == 2 * 6  # every method but REBASE and greedy, at both widths
    # greedy is one sample per problem; best-of-N gives every problem `width` trajectories
    greedy = load_answers(Path(rows[("greedy", 1)]["run"]) / "answers.json")
    assert all(len(p["model_answer"]) == 1 for p in greedy)
    assert all(len(p["model_answer"]) == 8 for p in load_answers(Path(rows[("best_of_n", 8)]["run"]) / "answers.json"))
    assert all(Path(p).stat().st_size > 0 for p in result["plots"]) and len(result["plots"]) == 3


def test_set_changes_the_config_of_every_method(tmp_path, capsys):
    bench = load_bench()
    result = bench.main(["--quick", "--methods", "rebase", "dvts", "--width", "4", "--set", "max_depth=2",
                         "--out", str(tmp_path)])
    assert "--set max_depth=2" in capsys.readouterr().out.splitlines()[0]
    for row in result["rows"]:
        run = json.loads((Path(row["run"]) / "run.json").read_text())
        assert run["config"]["max_depth"] == 2
        trees = list((Path(row["run"]) / "trees").glob("q*.json"))
        assert trees and max(n["depth"] for t in trees for n in json.loads(t.read_text())["nodes"]) == 2
    from ets.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'max_dept'; did you mean 'max_depth'"):
        bench.main(["--quick", "--methods", "rebase", "--set", "max_dept=2", "--out", str(tmp_path / "bad")])
