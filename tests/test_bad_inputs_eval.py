"""Bad inputs to ``ets evaluate``, ``ets report`` and ``ets view``: each is refused in one line naming
what to fix (exit 2; 1 for a failure while working), and no command leaves an output worse than it
found it (interrupted, out of disk, or pointed at a run's own files)."""

from __future__ import annotations

import errno
import math
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from ets import files
from ets.cli import main

GSM8K = str(Path(__file__).resolve().parent / "data" / "gsm8k_sample.jsonl")


# -- writing aside ----------------------------------------------------------------------------------------

def test_write_atomic_replaces_whole_and_keeps_the_mode(tmp_path):
    target = tmp_path / "page.html"
    files.write_atomic(target, "first")
    assert target.read_text() == "first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()  # as a plain open() makes it
    target.chmod(0o640)
    files.write_atomic(target, b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG" and stat.S_IMODE(target.stat().st_mode) == 0o640
    link = tmp_path / "link.html"
    link.symlink_to(target)
    files.write_atomic(link, "through the link")
    assert link.is_symlink() and target.read_text() == "through the link"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "page.html"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_write_all_renames_nothing_until_every_file_is_written(tmp_path, monkeypatch, failure):
    (tmp_path / "a.md").write_text("old a")
    (tmp_path / "b.png").write_bytes(b"old b")
    real = files._write_aside
    calls = []

    def second_fails(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise failure
        return real(path, data)

    monkeypatch.setattr(files, "_write_aside", second_fails)
    with pytest.raises(type(failure)):
        files.write_all({tmp_path / "a.md": "new a", tmp_path / "b.png": b"new b"})
    assert (tmp_path / "a.md").read_text() == "old a" and (tmp_path / "b.png").read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.png"]  # no temporary file left


# -- runs to break ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A finished scripted run of the GSM8K sample (5 problems, width 4), copied by each test that breaks it."""
    root = tmp_path_factory.mktemp("made")
    assert main(["run", "--scripted", "--quiet", "--input_path", GSM8K, "--width", "4",
                 "--output_path", str(root / "run" / "answers.json")]) == 0
    return root / "run"


@pytest.fixture
def run(made, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(made, copy)
    return copy


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")  # NaN and Infinity as Python writes them


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("ets: warning", f"ets {command}: warning"))]
    assert len(lines) == 1 and lines[0].startswith(f"ets {command}: ") and "Traceback" not in err, err
    assert "internal error" not in err, err
    return lines[0]


def evaluate(path, *extra) -> list[str]:
    return ["evaluate", "--path", str(path), "--agg_func", "majority_vote", "--weighted", "True",
            "--weight_agg", "last", *extra]


def trajectory(answer: str, scores) -> dict:
    return {"text": f"Q?\nThe answer is: {answer}", "step_scores": list(scores)}


# -- 1. NaN, infinite and out-of-range step scores --------------------------------------------------------------

BAD_SCORES = [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"), (1.5, "1.5"), (-0.25, "-0.25")]


@pytest.mark.parametrize("value, shown", BAD_SCORES)
def test_a_bad_score_listed_first_is_refused_not_left_to_decide_the_vote(tmp_path, capsys, value, shown):
    # 9's first vote bad, then four of 0.9, and one of 0.1 for 5: a NaN first kept 9's total NaN, and 5 won
    problems = [{"id": "q7", "question": "Q?", "ground_truth_answer": "9",
                 "model_answer": [trajectory("3", [0.5]), trajectory("9", [0.2, value])]
                 + [trajectory("9", [0.9])] * 4 + [trajectory("5", [0.1])]}]
    (tmp_path / "answers.json").write_text(json.dumps(problems))
    assert main(evaluate(tmp_path / "answers.json", "--json", "--model_type", "raw")) == 2
    line = one_line_error(capsys, "evaluate")
    assert "'q7'" in line and "trajectory 1" in line and f"step_scores[1] is {shown}" in line and "[0, 1]" in line
    assert capsys.readouterr().out == ""


def test_scores_at_the_ends_of_the_range_and_missing_ones_are_read(tmp_path, capsys):
    problems = [{"id": 0, "question": "Q?", "ground_truth_answer": "9",
                 "model_answer": [trajectory("9", [0, None, 1]), trajectory("5", [1.0000001, 0.0])]}]
    (tmp_path / "answers.json").write_text(json.dumps(problems))
    assert main(evaluate(tmp_path / "answers.json", "--json", "--model_type", "raw")) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


@pytest.mark.parametrize("value, shown", BAD_SCORES[:2] + BAD_SCORES[3:4])
def test_report_and_view_refuse_a_bad_score_naming_the_file(run, tmp_path, capsys, value, shown):
    edit_json(run / "answers.json", lambda d: d[2]["model_answer"][1]["step_scores"].__setitem__(0, value))
    assert main(["report", str(run), "-o", str(tmp_path / "report")]) == 2
    line = one_line_error(capsys, "report")
    assert str(run / "answers.json") in line and "(id 2), trajectory 1: step_scores[0] is " + shown in line
    assert not (tmp_path / "report").exists()
    # the viewer reads the tree files: a bad score in a problem's answer, or in a node
    edit_json(run / "trees" / "q3.json", lambda d: d["answer"]["model_answer"][0]["step_scores"].__setitem__(0, value))
    assert main(["view", str(run), "-o", str(tmp_path / "v.html")]) == 2
    line = one_line_error(capsys, "view")
    assert str(run / "trees" / "q3.json") in line
    assert "'answer' (id 3), trajectory 0: step_scores[0] is " + shown in line
    edit_json(run / "trees" / "q3.json", lambda d: d["answer"]["model_answer"][0]["step_scores"].__setitem__(0, 0.5))
    edit_json(run / "trees" / "q3.json", lambda d: d["nodes"][2].__setitem__("score", value))
    assert main(["view", str(run), "-o", str(tmp_path / "v.html")]) == 2
    assert f"nodes[2] (node 2): score is {shown}" in one_line_error(capsys, "view")
    assert not (tmp_path / "v.html").exists()


# -- 2. runs of different datasets, and sweeps with runs left by an earlier run -----------------------------------

def scripted(output: Path, *extra: str, input_path: str = GSM8K) -> Path:
    assert main(["run", "--scripted", "--quiet", "--input_path", input_path, "--output_path", str(output), *extra]) == 0
    return output.parent


def other_dataset(tmp_path: Path, count: int = 5) -> str:
    path = tmp_path / "asdiv.jsonl"
    path.write_text("".join(json.dumps({"question": f"Sam has {i + 2} apples and eats one. How many are left?",
                                        "answer": str(i + 1)}) + "\n" for i in range(count)))
    return str(path)


def test_report_refuses_runs_of_different_datasets_whose_ids_match(run, tmp_path, capsys):
    other = scripted(tmp_path / "asdiv" / "answers.json", "--width", "4", input_path=other_dataset(tmp_path))
    assert main(["report", str(run), str(other), "-o", str(tmp_path / "r"), "--brief"]) == 2
    line = one_line_error(capsys, "report")
    assert f"{run} and {other} are not runs of one dataset" in line and "problem 0 is 'Janet" in line
    assert "'Sam has 2 apples" in line and not (tmp_path / "r").exists()


def test_report_pairs_reference_runs_without_run_json_by_their_questions(run, tmp_path, capsys):
    # the reference's runs have no run.json: the questions in answers.json still tell their dataset
    for name in ("ref_a", "ref_b"):
        shutil.copytree(run, tmp_path / name, ignore=shutil.ignore_patterns("run.json", "trees"))
    assert main(["report", str(tmp_path / "ref_a"), str(tmp_path / "ref_b"), "-o", str(tmp_path / "r"),
                 "--model_type", "raw", "--brief"]) == 0
    assert "other problems" not in capsys.readouterr().out
    edit_json(tmp_path / "ref_b" / "answers.json", lambda d: d[4].__setitem__("question", "What is 2+2?"))
    assert main(["report", str(tmp_path / "ref_a"), str(tmp_path / "ref_b"), "-o", str(tmp_path / "r")]) == 2
    assert "problem 4 is" in one_line_error(capsys, "report")


@pytest.mark.parametrize("later, differs", [
    (["--select_method", "softmax"], "select_method 'softmax_costmodel' in width_2, 'softmax' in width_16"),
    (["--num_samples", "3"], "5 problems in width_2, 3 in width_16"),
    ([], "problem 0 is 'Sam has 2 apples"),  # the earlier run was of another dataset
])
def test_a_sweep_with_runs_left_by_an_earlier_run_is_refused_naming_them(tmp_path, capsys, later, differs):
    sweep = tmp_path / "sweep"
    scripted(sweep / "answers.json", "--width", "2", "4",
             input_path=GSM8K if later else other_dataset(tmp_path))
    scripted(sweep / "answers.json", "--width", "8", "16", "--overwrite", *later)
    capsys.readouterr()
    assert main(["report", str(sweep), "-o", str(tmp_path / "r")]) == 2
    line = one_line_error(capsys, "report")
    assert f"{sweep / 'width_2'} was not made with width_16" in line and differs in line
    assert "left by an earlier run (finished " in line
    # named one by one, the runs of the new sweep are reported
    assert main(["report", str(sweep / "width_8"), str(sweep / "width_16"), "-o", str(tmp_path / "r")]) == 0


def test_a_sweep_made_together_is_reported(tmp_path, capsys):
    sweep = scripted(tmp_path / "sweep" / "answers.json", "--width", "2", "4")
    capsys.readouterr()
    assert main(["report", str(sweep), "-o", str(tmp_path / "r"), "--json"]) == 0
    assert [row["width"] for row in json.loads(capsys.readouterr().out)] == [2, 4]


# -- 3. no ground truths ------------------------------------------------------------------------------------------

def test_no_ground_truth_at_all_is_refused_some_missing_are_counted(tmp_path, capsys):
    data = tmp_path / "label.jsonl"
    data.write_text("".join(json.dumps({"question": json.loads(line)["question"], "label": "18"}) + "\n"
                            for line in Path(GSM8K).read_text().splitlines()))
    run = scripted(tmp_path / "nogt" / "answers.json", "--width", "2", input_path=str(data))
    capsys.readouterr()
    for argv, command in ((evaluate(run), "evaluate"), (["report", str(run), "-o", str(tmp_path / "r")], "report")):
        assert main(argv) == 2
        line = one_line_error(capsys, command)
        assert str(run / "answers.json") in line
        assert "no ground truth for any problem (ground_truth_answer is null)" in line
        assert "answer field was not found" in line and "answer, Answer, solution" in line
    assert main(["view", str(run), "-o", str(tmp_path / "v.html")]) == 0  # the trees are still worth a look
    assert f"ets view: warning: {run / 'trees'}: no ground truth for any problem" in capsys.readouterr().err
    edit_json(run / "answers.json", lambda d: [p.__setitem__("ground_truth_answer", "18") for p in d[:3]])
    for argv, command in ((evaluate(run), "evaluate"), (["report", str(run), "-o", str(tmp_path / "r")], "report")):
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert f"ets {command}: warning: {run / 'answers.json'}: 2 of 5 problems have no ground truth" in err
        assert "ids 3, 4" in err


# -- 4. no command writes over what it reads, nor over a run's own files -----------------------------------------

@pytest.mark.parametrize("target, what", [
    ("answers.json", "is a file this command reads"),
    ("run.json", "is the run.json of the run"),
    ("stats.log", "is the stats.log of the run"),
    ("trees/q0.json", "is in the trees/ of the run"),
    ("trees/notes.txt", "is in the trees/ of the run"),
])
def test_evaluate_output_path_over_a_run_file_is_refused(run, capsys, target, what):
    before = snapshot(run)
    assert main(evaluate(run, "--output_path", str(run / target))) == 2
    line = one_line_error(capsys, "evaluate")
    assert f"--output_path {run / target} {what}" in line and "choose another path" in line
    assert snapshot(run) == before


def test_evaluate_output_path_is_the_answers_file_read_even_outside_a_run(run, tmp_path, capsys):
    lone = tmp_path / "mine.json"
    shutil.copy(run / "answers.json", lone)
    assert main(evaluate(lone, "--output_path", str(lone), "--model_type", "raw")) == 2
    assert f"--output_path {lone} is a file this command reads" in one_line_error(capsys, "evaluate")
    assert lone.read_bytes() == (run / "answers.json").read_bytes()


def test_evaluate_appends_beside_a_run_as_the_reference_does(run, capsys):
    notes = run / "results.txt"
    notes.write_text("earlier\n")
    assert main(evaluate(run, "--output_path", str(notes))) == 0
    assert main(evaluate(run, "--output_path", str(notes))) == 0
    text = notes.read_text()
    assert text.startswith("earlier\n") and text.count("agg_function majority_vote weighted: True") == 2


@pytest.mark.parametrize("command, output, what", [
    ("view", "answers.json", "is the answers.json of the run"),
    ("view", "trees/page.html", "is in the trees/ of the run"),
    ("report", "trees", "is the trees/ of the run"),
    ("report", "stats.log", "is the stats.log of the run"),
    ("report", "run.json", "is the run.json of the run"),
])
def test_report_and_view_output_over_a_run_file_is_refused(run, capsys, command, output, what):
    before = snapshot(run)
    assert main([command, str(run), "-o", str(run / output)]) == 2
    assert f"--output {run / output} {what}" in one_line_error(capsys, command)
    assert snapshot(run) == before


# -- 5. outputs written aside: a full disk or Ctrl-C leaves the earlier report and page --------------------------

@pytest.fixture
def earlier_outputs(run, tmp_path, capsys):
    """A report and a page written once: what a failed second writing must leave as it was."""
    assert main(["report", str(run), "-o", str(tmp_path / "report")]) == 0
    assert main(["view", str(run), "-o", str(tmp_path / "view.html")]) == 0
    capsys.readouterr()
    return {"report": snapshot(tmp_path / "report"), "view": (tmp_path / "view.html").read_bytes()}


@pytest.mark.parametrize("failure, code, said", [
    (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_a_failed_write_leaves_the_earlier_report_and_page(run, tmp_path, capsys, monkeypatch, earlier_outputs,
                                                           failure, code, said):
    real = os.fsync
    synced = []

    def fails_late(fd):  # the disk fills up (or Ctrl-C comes) after a few files were written aside
        synced.append(fd)
        if len(synced) == 3 or "view.html" in os.readlink(f"/proc/self/fd/{fd}"):
            raise failure  # as a failed write raises it: naming no file
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", fails_late)
    assert main(["report", str(run), "-o", str(tmp_path / "report")]) == code
    line = one_line_error(capsys, "report")
    assert said in line and (code == 130 or str(tmp_path / "report") in line)
    assert snapshot(tmp_path / "report") == earlier_outputs["report"]  # every file as it was, no temporary one
    assert main(["view", str(run), "-o", str(tmp_path / "view.html")]) == code
    line = one_line_error(capsys, "view")
    assert said in line and (code == 130 or str(tmp_path / "view.html") in line)
    assert (tmp_path / "view.html").read_bytes() == earlier_outputs["view"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "run", "view.html"]


def test_evaluate_append_that_fails_leaves_the_file_whole(run, tmp_path, capsys, monkeypatch):
    notes = tmp_path / "results.txt"
    notes.write_text("earlier\n")
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    assert main(evaluate(run, "--output_path", str(notes))) == 1
    assert f"{notes}: No space left on device" in one_line_error(capsys, "evaluate")
    assert notes.read_text() == "earlier\n"


def test_report_output_that_is_a_file_is_refused(run, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    assert main(["report", str(run), "-o", str(tmp_path / "taken")]) == 2
    assert f"--output {tmp_path / 'taken'} is a file" in one_line_error(capsys, "report")
    assert main(["view", str(run), "-o", str(tmp_path)]) == 2
    assert f"--output {tmp_path} is a directory" in one_line_error(capsys, "view")
    assert (tmp_path / "taken").read_text() == "mine"


# -- 6. one reader for run directories: damaged or unexpected files are named, with what is wrong ------------------

def set_key(*keys, value):
    def change(data):
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value
    return change


DAMAGED = [  # (file, damage, what the line says), damage: bytes to write, or a change to the JSON
    ("run.json", b"\xff\xfe{}", "not UTF-8 text (byte 0xff at offset 0)"),
    ("run.json", b"[1]", "a JSON list, expected an object with 'config' and 'stats'"),
    ("run.json", set_key("config", value=[1]), "'config' is a JSON list, expected an object of settings"),
    ("run.json", set_key("config", "width", value="16"), "config.width is '16', expected a whole number"),
    ("run.json", set_key("stats", "time", value="NaN"), "stats.time is 'NaN', expected a finite number"),
    ("run.json", b"{", "not valid JSON"),
]
TREE_DAMAGE = [
    ("trees/q1.json", b"\x80", "not UTF-8 text (byte 0x80 at offset 0)"),
    ("trees/q1.json", set_key("nodes", value=[]), "'nodes' is empty"),
    ("trees/q1.json", b"[]", "not a tree file of `ets run` (a JSON list"),
    ("trees/q1.json", set_key("answer", "model_answer", value={}), "'answer' (id 1): 'model_answer' should be a list"),
    ("trees/q1.json", set_key("fingerprint", value=[1]), "'fingerprint' is not an object"),
    ("trees/q1.json", set_key("stats", "kv_cache_size", value=-3), "stats.kv_cache_size is -3"),
]


def damage(run: Path, name: str, how) -> Path:
    path = run / name
    if isinstance(how, bytes):
        path.write_bytes(how)
    else:
        edit_json(path, how)
    return path


@pytest.mark.parametrize("name, how, said", DAMAGED)
def test_every_command_names_a_damaged_run_json(run, tmp_path, capsys, name, how, said):
    path = damage(run, name, how)
    for argv, command in ((evaluate(run), "evaluate"), (["report", str(run), "-o", str(tmp_path / "r")], "report"),
                          (["view", str(run), "-o", str(tmp_path / "v.html")], "view")):
        assert main(argv) == 2, command
        line = one_line_error(capsys, command)
        assert f"{path}: {said}" in line, line
    assert not (tmp_path / "r").exists() and not (tmp_path / "v.html").exists()


@pytest.mark.parametrize("name, how, said", TREE_DAMAGE)
def test_a_damaged_tree_file_is_named_by_view_and_report(run, tmp_path, capsys, name, how, said):
    path = damage(run, name, how)
    assert main(["view", str(run), "-o", str(tmp_path / "v.html")]) == 2
    assert f"{path}: {said}" in one_line_error(capsys, "view")
    # the report's table needs no tree: it is written, and says which page it could not make and why
    assert main(["report", str(run), "-o", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert f"ets: warning: no tree page for {run}: {path}: {said}" in err and "internal error" not in err
    assert (tmp_path / "r" / "report.md").is_file() and not list((tmp_path / "r").glob("*.html"))


def test_a_damaged_stats_log_is_named(run, tmp_path, capsys):
    (run / "stats.log").write_bytes(b"Total KV cache size: 1\xff\n")
    assert main(["report", str(run), "-o", str(tmp_path / "r")]) == 2
    assert f"{run / 'stats.log'}: not UTF-8 text (byte 0xff at offset 22)" in one_line_error(capsys, "report")
    (run / "stats.log").write_text("Total KV cache size: nan\nNumber of Model Calls: 1\n"
                                   "Number of Tokens Generated: 1\nTime: 1\n")
    assert main(["report", str(run), "-o", str(tmp_path / "r")]) == 2
    assert "'Total KV cache size: nan' holds no finite number" in one_line_error(capsys, "report")


# -- 7. answers under another name -------------------------------------------------------------------------------

def test_a_run_whose_answers_file_has_another_name_is_found(tmp_path, capsys):
    run = scripted(tmp_path / "run" / "results.json", "--width", "2")
    capsys.readouterr()
    assert main(evaluate(run, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 5
    assert main(["report", str(run), "-o", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["problems"] == 5
    assert main(["view", str(run), "-o", str(tmp_path / "v.html")]) == 0
    # a sweep with the answers so named
    sweep = scripted(tmp_path / "sweep" / "results.json", "--width", "2", "4")
    capsys.readouterr()
    assert main(["report", str(sweep), "-o", str(tmp_path / "r"), "--json"]) == 0
    assert [row["width"] for row in json.loads(capsys.readouterr().out)] == [2, 4]
    # no output over it either
    assert main(evaluate(run, "--output_path", str(run / "results.json"))) == 2
    assert "is a file this command reads" in one_line_error(capsys, "evaluate")
    # two files that could be the answers: which one is not guessed
    shutil.copy(run / "results.json", run / "copy.json")
    assert main(evaluate(run)) == 2
    assert f"{run}: no answers.json, and 2 JSON files holding answers (copy.json, results.json)" in \
        one_line_error(capsys, "evaluate")


# -- 8. a name too long for the file system -----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["evaluate --path", "evaluate --output_path", "report", "report -o", "view",
                                     "view -o"])
def test_a_path_part_over_255_bytes_is_named(run, tmp_path, capsys, command):
    long = tmp_path / ("x" * 300)
    argv = {
        "evaluate --path": evaluate(long / "answers.json"),
        "evaluate --output_path": evaluate(run, "--output_path", str(long / "out.txt")),
        "report": ["report", str(long), "-o", str(tmp_path / "r")],
        "report -o": ["report", str(run), "-o", str(long)],
        "view": ["view", str(long), "-o", str(tmp_path / "v.html")],
        "view -o": ["view", str(run), "-o", str(long / "v.html")],
    }[command]
    assert main(argv) == 2
    assert f"{long}: a name 300 bytes long; the file system allows 255" in one_line_error(capsys, command.split()[0])


# -- 9. a byte-order mark, as the dataset reader accepts --------------------------------------------------------------

def test_a_byte_order_mark_is_read(run, capsys):
    for name in ("answers.json", "run.json", "stats.log", "trees/q0.json"):
        (run / name).write_bytes(b"\xef\xbb\xbf" + (run / name).read_bytes())
    assert main(evaluate(run, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 5
    assert main(["report", str(run), "-o", str(run.parent / "r")]) == 0
    assert main(["view", str(run), "-o", str(run.parent / "v.html")]) == 0


# -- 10. Ctrl-C while reading --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["evaluate", "report", "view"])
def test_ctrl_c_while_reading_is_one_line(run, tmp_path, capsys, monkeypatch, command):
    from ets.evaluate import evaluator

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluator, "_Problem", interrupted)
    argv = {"evaluate": evaluate(run), "report": ["report", str(run), "-o", str(tmp_path / "r")],
            "view": ["view", str(run), "-o", str(tmp_path / "v.html")]}[command]
    assert main(argv) == 130
    assert one_line_error(capsys, command) == f"ets {command}: interrupted"
    assert not (tmp_path / "r").exists() and not (tmp_path / "v.html").exists()


def test_a_pair_with_a_damaged_run_still_gives_the_other_its_tree_page(run, tmp_path, capsys):
    other = scripted(tmp_path / "rebase" / "answers.json", "--width", "4", "--select_method", "softmax")
    (run / "trees" / "q1.json").write_bytes(b"\x80")
    assert main(["report", str(run), str(other), "-o", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert f"no tree page for {other}, {run}: {run / 'trees' / 'q1.json'}: not UTF-8" in err  # by method
    assert [p.name for p in (tmp_path / "r").glob("*.html")] == ["trees_softmax_width_4.html"]
