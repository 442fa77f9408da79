"""ets report: a width sweep of two methods plus a reference run -> one table
(Markdown, CSV) whose figures equal `ets evaluate`'s and stats.log's, and
three PNG plots of the expected size."""

from __future__ import annotations

import csv
import io
import json
import random
import struct
from pathlib import Path

import pytest

from ets.cli import main
from ets.evaluate.aggregate import ALL_SETTINGS
from ets.evaluate.intervals import paired_difference, wilson_interval
from ets.evaluate.report import DPI, FIGSIZE, ReportError, discover_runs, read_stats_log

TAG = " \u043a\u0438"
SETTINGS = [s.name for s in ALL_SETTINGS]
PLOTS = ("accuracy_vs_width.png", "accuracy_vs_kv_cache.png", "accuracy_vs_tokens.png")


def traj(answer, scores):
    steps = "".join(f"Step {i + 1}: work.{TAG}\n" for i in range(len(scores) - 1))
    return {"text": f"Q?\n{steps}The answer is: {answer}{TAG}", "step_scores": list(scores),
            "steps": [f"Step {i + 1}: work.{TAG}" for i in range(len(scores) - 1)] + [f"The answer is: {answer}{TAG}"]}


# the hand-made problems of tests/test_evaluate.py, whose accuracies are known
HAND_PROBLEMS = [
    {"id": 1, "question": "Q?", "ground_truth_answer": "7", "total_tokens": 30,
     "model_answer": [traj("7", [0.75, 0.25]), traj("8", [0.5, 0.5]), traj("7", [0.5, 0.125])]},
    {"id": 2, "question": "Q?", "ground_truth_answer": "\\frac{1}{2}", "total_tokens": 20,
     "model_answer": [traj("0.5", [1.0]), traj("3", [0.25])]},
]
HAND_EXPECTED = {
    "best_of_n/min": 0.5, "best_of_n/prod": 0.5, "best_of_n/mean": 1.0, "best_of_n/last": 0.5,
    "majority_vote/unweighted": 1.0, "majority_vote/weighted/min": 0.5, "majority_vote/weighted/prod": 0.5,
    "majority_vote/weighted/mean": 1.0, "majority_vote/weighted/last": 0.5,
}


def random_problems(seed: int, width: int, n: int = 6):
    rng = random.Random(seed)
    problems = []
    for pid in range(n):
        gt = str(rng.randint(1, 9))
        cands = []
        for _ in range(max(1, width // 2)):
            answer = gt if rng.random() < 0.45 else rng.choice(["1", "2", "3.0", "\\frac{8}{2}", "x"])
            cands.append(traj(answer, [round(rng.random(), 3) for _ in range(rng.randint(1, 4))]))
        problems.append({"id": pid, "question": "Q?", "ground_truth_answer": gt, "model_answer": cands,
                         "total_tokens": 10 * width})
    return problems


def make_run(path: Path, problems, stats: dict, config: dict | None = None, reused: int | None = None):
    """A run directory as `ets run` writes it (config None: as the reference does, no run.json)."""
    path.mkdir(parents=True)
    (path / "answers.json").write_text(json.dumps(problems, ensure_ascii=False), encoding="utf-8")
    (path / "stats.log").write_text(
        f"Total KV cache size: {stats['kv']}\nNumber of Model Calls: {stats['calls']}\n"
        f"Number of Tokens Generated: {stats['tokens']}\nTime: {stats['time']}\n", encoding="utf-8")
    (path / "trees").mkdir()
    if config is not None:
        run = {"ets_version": "0.1.0",
               "config": {"prompt_format": "llemma", "lambdac": 1.0, "lambdas": 1.0, **config},
               "stats": {"kv_cache_size": stats["kv"], "model_calls": stats["calls"],
                         "tokens_generated": stats["tokens"], "prompt_tokens_computed": 100,
                         "prompt_tokens_reused": reused, "time": stats["time"]}}
        (path / "run.json").write_text(json.dumps(run), encoding="utf-8")


WIDTHS = (4, 8, 16)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for m, method in enumerate(("softmax_costmodel", "softmax")):
        for w in WIDTHS:
            path = root / f"sweep_{method}" / f"width_{w}"
            problems = HAND_PROBLEMS if (method, w) == ("softmax_costmodel", 4) else random_problems(10 * m + w, w)
            stats = {"kv": 1000 * w + 7 * m, "calls": 90 * w + m, "tokens": 500 * w + 3 * m, "time": 1.5 * w + m}
            make_run(path, problems, stats, {"width": w, "select_method": method}, reused=40 * w + m)
            runs[(method, w)] = (path, stats, 40 * w + m)
    ref = root / "ets_16_math500"  # a reference run: no run.json
    ref_stats = {"kv": 12345, "calls": 678, "tokens": 9012, "time": 34.5}
    make_run(ref, random_problems(99, 16), ref_stats)
    runs[("unknown", 16)] = (ref, ref_stats, None)
    return root, runs


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    root, runs = sweep
    out = tmp_path_factory.mktemp("report")
    args = ["report", str(root / "sweep_softmax_costmodel"), str(root / "sweep_softmax"),
            str(root / "ets_16_math500"), "--output", str(out)]
    assert main(args) == 0
    return out, runs


def read_csv(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "report.csv").read_text(encoding="utf-8"))))


def evaluate_cli(capsys, answers: Path) -> dict[str, float]:
    capsys.readouterr()
    assert main(["evaluate", "--path", str(answers), "--all", "--json", "--model_type", "llemma"]) == 0
    return json.loads(capsys.readouterr().out)["accuracy"]


def test_report_writes_the_table_and_the_plots(report):
    out, runs = report
    for name in ("report.md", "report.csv", *PLOTS):
        assert (out / name).is_file(), name
    rows = read_csv(out)
    assert len(rows) == len(runs)
    # grouped by method, sorted by width
    assert [(r["method"], r["width"]) for r in rows] == (
        [("softmax", str(w)) for w in WIDTHS] + [("softmax_costmodel", str(w)) for w in WIDTHS]
        + [("unknown", "16")])


def test_table_figures_equal_ets_evaluate_and_stats_log(report, capsys):
    out, runs = report
    rows = {(r["method"], int(r["width"])): r for r in read_csv(out)}
    for key, (path, stats, reused) in runs.items():
        row = rows[key]
        from_cli = evaluate_cli(capsys, path / "answers.json")
        for name in SETTINGS:
            assert float(row[name]) == from_cli[name], (key, name)
        from_log = read_stats_log(path / "stats.log")
        assert int(row["kv_cache_size"]) == from_log["kv_cache_size"] == stats["kv"]
        assert int(row["model_calls"]) == from_log["model_calls"] == stats["calls"]
        assert int(row["tokens_generated"]) == from_log["tokens_generated"] == stats["tokens"]
        assert float(row["time"]) == from_log["time"] == stats["time"]
        assert row["prompt_tokens_reused"] == ("" if reused is None else str(reused))
        assert Path(row["run"]) == path
    # the hand-made run, whose figures are known independently of the code
    hand = rows[("softmax_costmodel", 4)]
    assert {name: float(hand[name]) for name in SETTINGS} == HAND_EXPECTED


def test_markdown_table(report):
    out, runs = report
    md = (out / "report.md").read_text(encoding="utf-8")
    lines = [line for line in md.split("\n\n")[0].splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(runs)
    assert "BoN last" in lines[0] and "WMV last" in lines[0] and "KV cache" in lines[0]
    hand = next(line for line in lines if "softmax_costmodel | 4 |" in line)
    cells = [c.strip() for c in hand.strip("|").split("|")]
    # method, width, 9 accuracies in %, KV cache, prefix reused, tokens, calls, time
    assert cells[:11] == ["softmax_costmodel", "4", "50.0", "50.0", "100.0", "50.0", "100.0",
                          "50.0", "50.0", "100.0", "50.0"]
    assert cells[11:16] == ["4000", "160", "2000", "360", "6.00"]


def test_intervals_and_the_paired_difference_to_the_first_run(tmp_path, capsys):
    """The first run named is the baseline; a run on the same problems gets a paired difference."""
    all_right = [{**p, "model_answer": [traj(p["ground_truth_answer"], [0.5])]} for p in HAND_PROBLEMS]
    make_run(tmp_path / "hand", HAND_PROBLEMS, {"kv": 1, "calls": 1, "tokens": 1, "time": 1.0}, {"width": 4, "select_method": "softmax"})
    make_run(tmp_path / "right", all_right, {"kv": 1, "calls": 1, "tokens": 1, "time": 1.0}, {"width": 1, "select_method": "best_of_n"})
    make_run(tmp_path / "other", random_problems(3, 4), {"kv": 1, "calls": 1, "tokens": 1, "time": 1.0}, {"width": 4, "select_method": "dvts"})
    assert main(["report", str(tmp_path / "hand"), str(tmp_path / "right"), str(tmp_path / "other"), "--output", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    table = md.split("95 % intervals")[1]
    assert f"`{tmp_path / 'hand'}`" in md.split("95 % intervals")[1].splitlines()[0]  # named as the baseline
    rows = {line.split("|")[-2].strip(" `"): [c.strip() for c in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith("| ") and "`" in line}
    low, high = wilson_interval(1, 2)  # the hand run: 1 of 2 under the weighted vote (last)
    assert rows[str(tmp_path / "hand")][2:5] == ["50.0", f"[{100 * low:.1f}, {100 * high:.1f}]", ""]
    d, d_low, d_high = paired_difference([True, True], [True, False])
    assert rows[str(tmp_path / "right")][2:6] == ["100.0", "[34.2, 100.0]", f"{100 * d:+.1f}", f"[{100 * d_low:+.1f}, {100 * d_high:+.1f}]"]
    assert rows[str(tmp_path / "other")][4] == "other problems"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_plots_are_pngs_of_the_expected_size(report):
    out, _ = report
    expected = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert expected == (640, 480)
    for name in PLOTS:
        assert png_size(out / name) == expected, name
        assert (out / name).stat().st_size > 5000  # drawn, not blank


def test_report_json_and_the_metric_option(sweep, tmp_path, capsys):
    root, runs = sweep
    capsys.readouterr()
    assert main(["report", str(root / "sweep_softmax_costmodel" / "width_4"), "--output", str(tmp_path),
                 "--json", "--metric", "best_of_n/mean"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["method"] == "softmax_costmodel" and rows[0]["width"] == 4
    assert rows[0]["best_of_n/mean"] == 1.0 and rows[0]["kv_cache_size"] == 4000
    assert "best_of_n/mean" in (tmp_path / "report.md").read_text()
    assert png_size(tmp_path / "accuracy_vs_width.png") == (640, 480)


def test_discovery(sweep, tmp_path):
    root, _ = sweep
    runs = discover_runs([root / "sweep_softmax", root / "sweep_softmax" / "width_8",
                          root / "ets_16_math500" / "answers.json"])
    # width_8 listed once; width order is numeric (4, 8, 16), not lexical
    assert [p.name for p in runs] == ["width_4", "width_8", "width_16", "ets_16_math500"]
    with pytest.raises(ReportError, match="no such run directory"):
        discover_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no answers.json"):
        discover_runs([tmp_path / "empty"])


def test_report_errors_name_the_path(tmp_path, capsys):
    run = tmp_path / "width_4"
    make_run(run, HAND_PROBLEMS, {"kv": 1, "calls": 2, "tokens": 3, "time": 4.0})
    (run / "stats.log").write_text("Total KV cache size: 1\nTime: 2\n")
    assert main(["report", str(run), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(run / "stats.log") in err and "Number of Model Calls" in err
    assert main(["report", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")]) == 2
    assert "nothing" in capsys.readouterr().err


def test_report_on_a_sweep_written_by_ets_run(tmp_path, capsys):
    """End to end: `ets run --scripted` sweeps two methods over widths, `ets report` reads them."""
    pytest.importorskip("ets.commands.run")
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a}+{b}?", "answer": str(a + b)}) + "\n"
                            for a, b in [(2, 3), (1, 1), (0, 4)]))
    for method in ("softmax_costmodel", "softmax"):
        assert main(["run", "--scripted", "--input_path", str(data), "--output_path",
                     str(tmp_path / method / "answers.json"), "--width", "2", "4", "8",
                     "--select_method", method, "--quiet"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "softmax_costmodel"), str(tmp_path / "softmax"), "-o", str(out)]) == 0
    rows = read_csv(out)
    assert [(r["method"], r["width"]) for r in rows] == [
        (m, str(w)) for m in ("softmax", "softmax_costmodel") for w in (2, 4, 8)]
    for row in rows:
        run = Path(row["run"])
        run_json = json.loads((run / "run.json").read_text())
        assert row["model_type"] == run_json["config"]["prompt_format"]
        capsys.readouterr()
        assert main(["evaluate", "--path", str(run / "answers.json"), "--all", "--json",
                     "--model_type", row["model_type"]]) == 0
        from_cli = json.loads(capsys.readouterr().out)["accuracy"]
        assert {name: float(row[name]) for name in SETTINGS} == from_cli
        log = read_stats_log(run / "stats.log")
        for key in ("kv_cache_size", "model_calls", "tokens_generated"):
            assert int(row[key]) == log[key] == run_json["stats"][key] > 0
        assert int(row["prompt_tokens_reused"]) == run_json["stats"]["prompt_tokens_reused"]
    for name in PLOTS:
        assert png_size(out / name) == (640, 480)


def test_brief_summary_gives_each_runs_interval_and_the_paired_difference(tmp_path, capsys):
    """`ets report --brief` (what `make run` prints): greedy 1 of 4, ETS 3 of 4, on the same problems."""
    def run(name, method, width, temperature, correct):
        d = tmp_path / name
        d.mkdir()
        problems = [{"id": i, "question": "Q?", "ground_truth_answer": "7", "total_tokens": 10,
                     "model_answer": [traj("7" if ok else "8", [0.9])]} for i, ok in enumerate(correct)]
        (d / "answers.json").write_text(json.dumps(problems))
        (d / "run.json").write_text(json.dumps({"config": {"select_method": method, "width": width,
                                                           "temperature": temperature, "prompt_format": "llemma"}}))
        return str(d)

    greedy = run("greedy", "best_of_n", 1, 0.0, [True, False, False, False])
    ets = run("ets", "softmax_costmodel", 8, 0.4, [True, True, True, False])
    assert main(["report", greedy, ets, "-o", str(tmp_path / "report"), "--brief"]) == 0
    out = capsys.readouterr().out.splitlines()
    low, high = wilson_interval(3, 4)
    d, d_low, d_high = paired_difference([1, 1, 1, 0], [1, 0, 0, 0])
    assert out[0].startswith("4 problems, accuracy by majority vote weighted by the last step score")
    assert out[1].split() == ["run", "accuracy", "95", "%", "CI", "vs", "greedy", "(points)", "95", "%", "CI"]
    assert out[2].split() == ["greedy", "25.0", "%", *f"[{100 * wilson_interval(1, 4)[0]:.1f}, "
                                                       f"{100 * wilson_interval(1, 4)[1]:.1f}]".split()]
    assert out[3].split() == ["ETS", "width", "8", "75.0", "%", f"[{100 * low:.1f},", f"{100 * high:.1f}]",
                              f"{100 * d:+.1f}", f"[{100 * d_low:+.1f},", f"{100 * d_high:+.1f}]"]
    assert d == pytest.approx(0.5)
    assert out[-1] == f"full report: {tmp_path / 'report' / 'report.md'}"
    assert (tmp_path / "report" / "report.md").is_file()  # the files are written in full


def test_a_key_sweep_is_one_line_per_width_labelled_by_its_setting(tmp_path, capsys, monkeypatch):
    """ETS at three lambdac values (a sweep directory of lambdac=V runs) and REBASE at the same width: the
    table names each setting, the sweep is not taken for stale runs, and the KV plot draws ETS's settings
    as one line whose points carry their values."""
    sample = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"
    for value in (0.5, 1, 4):
        assert main(["run", "--scripted", "--input_path", str(sample), "--num_samples", "3", "--width", "4",
                     "--set", f"lambdac={value}", "--output_path", str(tmp_path / "sweep" / f"lambdac={value}"),
                     "--quiet"]) == 0
    assert main(["run", "--scripted", "--input_path", str(sample), "--num_samples", "3", "--width", "4",
                 "--select_method", "softmax", "--output_path", str(tmp_path / "rebase"), "--quiet"]) == 0
    capsys.readouterr()
    import matplotlib.axes

    drawn, notes = {}, []
    plot, annotate = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.annotate

    def plot_and_keep(self, xs, ys, **kw):
        axes = drawn.setdefault(id(self), {})  # a plot each, in the order of PLOTS: width, KV figure, tokens
        axes[kw["label"]] = list(xs)
        return plot(self, xs, ys, **kw)

    def annotate_and_keep(self, text, *args, **kw):
        notes.append(text)
        return annotate(self, text, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot_and_keep)
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate", annotate_and_keep)
    assert main(["report", str(tmp_path / "sweep"), str(tmp_path / "rebase"), "-o", str(tmp_path / "r")]) == 0
    table = (tmp_path / "r" / "report.md").read_text()
    for value in (0.5, 1.0, 4.0):
        assert f"| softmax_costmodel (lambdac={value}) | 4 |" in table
    assert "| softmax | 4 |" in table
    width_plot, kv_plot, tokens_plot = drawn.values()
    ets = "ETS (softmax_costmodel), width 4"
    assert set(kv_plot) == set(tokens_plot) == {ets, "REBASE (softmax)"}
    assert len(kv_plot[ets]) == 3 and kv_plot[ets] == sorted(kv_plot[ets])  # the three settings, along the KV figure
    assert kv_plot["REBASE (softmax)"] == [json.loads((tmp_path / "rebase" / "run.json").read_text())["stats"]["kv_cache_size"]]
    assert sorted(n for n in notes if n.startswith("lambdac")) == sorted(["lambdac=0.5", "lambdac=1.0", "lambdac=4.0"] * 2)
    assert set(width_plot) == {f"ETS (softmax_costmodel) (lambdac={v})" for v in (0.5, 1.0, 4.0)} | {"REBASE (softmax)"}
