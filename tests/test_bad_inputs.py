"""Bad input, damaged files, hanging servers and interruptions, walked through the CLI as a user meets them.

Every refusal: a non-zero exit, one line naming the culprit (file, line, key or URL) and what to do,
no traceback, and nothing written or changed. What can be recovered (a damaged checkpoint, a corrected
ground truth, a killed run) is recovered, and the run's files end up as an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from standins.servers import StandinServer

import ets
from ets.cli import main

GSM8K = str(Path(__file__).parent / "data" / "gsm8k_sample.jsonl")  # 5 problems
SCRIPTED = ["--scripted", "--quiet"]


def run_args(output="out/answers.json", *extra, input_path=GSM8K):
    return ["run", "--input_path", input_path, "--output_path", output, *extra]


def write(path: str, data: bytes | str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)


def finished_run(output="fin/answers.json", *extra) -> None:
    """A finished scripted run of 3 problems at width 2: the directory the next command meets."""
    assert main(run_args(output, "--num_samples", "3", "--width", "2", *SCRIPTED, *extra)) == 0


def answers_file(path: str, **trajectory) -> None:
    write(path, json.dumps([{"id": 0, "question": "1+1?", "ground_truth_answer": "2",
                             "model_answer": [{"text": "The answer is: 2", "step_scores": [0.9], **trajectory}]}]))


def snapshot(root: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every path below root, with each file's bytes and modification time: what 'nothing changed' compares."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@dataclass
class Case:
    id: str
    argv: list[str]
    culprit: tuple[str, ...]  # every one of these is in the error line
    code: int = 2
    setup: Callable[[], None] = field(default=lambda: None)


def other_dataset() -> None:
    records = [json.loads(line) for line in Path(GSM8K).read_text().splitlines()[:3]]
    records[1]["question"] = "What is 2+2?"
    write("other.jsonl", "\n".join(map(json.dumps, records)) + "\n")


CASES = [
    # ---- the dataset
    Case("dataset not UTF-8 (.jsonl)", run_args("out/answers.json", *SCRIPTED, input_path="bad.jsonl"),
         ("bad.jsonl:2", "not UTF-8", "save the file as UTF-8"),
         setup=lambda: write("bad.jsonl", b'{"question": "1+1?"}\n{"question": "caf\xe9?"}\n')),
    Case("dataset not UTF-8 (.json)", run_args("out/answers.json", *SCRIPTED, input_path="bad.json"),
         ("bad.json:1", "not UTF-8"), setup=lambda: write("bad.json", b'[{"question": "\xff"}]')),
    Case("dataset is a directory", run_args("out/answers.json", *SCRIPTED, input_path="data.jsonl"),
         ("data.jsonl", "is a directory"), setup=lambda: Path("data.jsonl").mkdir()),
    Case("dataset missing", run_args("out/answers.json", *SCRIPTED, input_path="nope.jsonl"),
         ("nope.jsonl", "not found")),
    Case("dataset empty", run_args("out/answers.json", *SCRIPTED, input_path="empty.jsonl"),
         ("empty.jsonl", "no problems"), setup=lambda: write("empty.jsonl", "\n\n")),
    Case("dataset not parquet", run_args("out/answers.json", *SCRIPTED, input_path="d.parquet"),
         ("d.parquet", "parquet"), setup=lambda: write("d.parquet", "question,answer\n")),
    Case("dataset of an unknown format", run_args("out/answers.json", *SCRIPTED, input_path="d.csv"),
         ("d.csv", "unknown dataset format"), setup=lambda: write("d.csv", "question,answer\n")),
    # ---- where the run is written
    Case("output under /proc", run_args("/proc/self/answers.json", *SCRIPTED),
         ("cannot write the run directory /proc/self", "choose another --output_path")),
    Case("output under /sys", run_args("/sys/ets-test/answers.json", *SCRIPTED),
         ("cannot write the run directory /sys/ets-test",)),
    Case("a file named trees in the run directory", run_args("run/answers.json", *SCRIPTED),
         ("run/trees is a file", "checkpoints", "move it away"), setup=lambda: write("run/trees", "notes")),
    Case("the run directory is a file", run_args("results", *SCRIPTED),
         ("results is a file", "the run directory"), setup=lambda: write("results", "notes")),
    Case("the run directory is below a file", run_args("notes.txt/answers.json", *SCRIPTED),
         ("notes.txt is a file",), setup=lambda: write("notes.txt", "notes")),
    Case("stats.log is a directory", run_args("run/answers.json", *SCRIPTED),
         ("run/stats.log is a directory",), setup=lambda: Path("run/stats.log").mkdir(parents=True)),
    Case("output over the dataset", run_args("d.json", *SCRIPTED, input_path="d.json"),
         ("d.json is the dataset itself",), setup=lambda: write("d.json", '[{"question": "1+1?", "answer": "2"}]')),
    # ---- servers
    Case("--policy_host empty", run_args("out/answers.json", "--policy_host", ""),
         ("--policy_host", "no server URL", "http://HOST:PORT")),
    Case("--reward_host blank", run_args("out/answers.json", "--reward_host", " , "), ("--reward_host", "no server URL")),
    Case("--policy_host not http", run_args("out/answers.json", "--policy_host", "ftp://h:1"),
         ("--policy_host", "'ftp://h:1'", "http://")),
    Case("--policy_host bad port", run_args("out/answers.json", "--policy_host", "localhost:99999"),
         ("--policy_host", "'localhost:99999'", "port")),
    Case("--policy_host with no host", run_args("out/answers.json", "--policy_host", "http://:8000"),
         ("--policy_host", "no host name")),
    Case("--request_timeout 0", run_args("out/answers.json", "--policy_host", "h:1", "--request_timeout", "0"),
         ("--request_timeout", "> 0")),
    Case("--request_timeout without a server", run_args("out/answers.json", "--request_timeout", "5", *SCRIPTED),
         ("--request_timeout", "--policy_host")),
    Case("--scripted_delay without --scripted", run_args("out/answers.json", "--scripted_delay", "1"),
         ("--scripted_delay", "--scripted")),
    # ---- the config
    Case("empty YAML", run_args("out/answers.json", "--config", "e.yaml", *SCRIPTED), ("e.yaml", "no keys"),
         setup=lambda: write("e.yaml", "")),
    Case("YAML of comments only", run_args("out/answers.json", "--config", "c.yaml", *SCRIPTED),
         ("c.yaml", "no keys"), setup=lambda: write("c.yaml", "# width: 4\n")),
    Case("YAML key given twice", run_args("out/answers.json", "--config", "dup.yaml", *SCRIPTED),
         ("dup.yaml:3", "'width' is given twice", "first on line 1"),
         setup=lambda: write("dup.yaml", "width: 4\nlambdac: 1.0\nwidth: 8\n")),
    Case("YAML not a mapping", run_args("out/answers.json", "--config", "l.yaml", *SCRIPTED),
         ("l.yaml", "expected a mapping"), setup=lambda: write("l.yaml", "- width\n- 4\n")),
    Case("YAML not UTF-8", run_args("out/answers.json", "--config", "u.yaml", *SCRIPTED),
         ("u.yaml", "not UTF-8"), setup=lambda: write("u.yaml", b"width: 4 # \xff\n")),
    Case("YAML missing", run_args("out/answers.json", "--config", "none.yaml", *SCRIPTED), ("none.yaml", "not found")),
    Case("policy_model misspelled", run_args("out/answers.json", "--policy_model", "qwen2.5-coder-05b", "--quiet"),
         ("qwen2.5-coder-05b", "GGUF model file not found", "built-in policy: smollm2-135m, qwen2.5-coder-0.5b"), code=1),
    Case("YAML is a directory", run_args("out/answers.json", "--config", "cfg", *SCRIPTED),
         ("cannot read the config file cfg",), setup=lambda: Path("cfg").mkdir()),
    Case("--set a number as text", run_args("out/answers.json", "--set", "lambdac=one", *SCRIPTED),
         ("lambdac", "expected a finite number", "'one'")),
    Case("max_step_tokens above max_tokens",
         run_args("out/answers.json", "--set", "max_tokens=200", "--set", "max_step_tokens=300", *SCRIPTED),
         ("max_step_tokens (300)", "max_tokens (200)")),
    Case("a prompt longer than max_tokens",
         run_args("out/answers.json", "--set", "max_tokens=20", "--set", "max_step_tokens=8", *SCRIPTED),
         ("problem 0 (", "gsm8k_sample.jsonl:1)", "at least 52 tokens", "max_tokens", "is 20", "max_tokens=60")),
    Case("--width 0", run_args("out/answers.json", "--width", "0", *SCRIPTED), ("--width", ">= 1")),
    # ---- a run directory that holds another run
    Case("another dataset into a finished run", run_args("fin/answers.json", "--width", "2", *SCRIPTED,
                                                          input_path="other.jsonl"),
         ("fin holds another run", "problem 1 (other.jsonl:2) is another question", "'What is 2+2?' now",
          "--overwrite"), setup=lambda: (finished_run(), other_dataset())),
    Case("fewer problems into a finished run", run_args("fin/answers.json", "--width", "2", "--num_samples", "2",
                                                         *SCRIPTED),
         ("fin holds another run", "1 problem(s) this run does not have (ids 2; this run has 2)"),
         setup=finished_run),
    Case("another setting into a finished run", run_args("fin/answers.json", "--width", "2", "--num_samples", "3",
                                                          "--set", "lambdac=2", *SCRIPTED),
         ("fin holds another run", "lambdac 1.0 then, 2.0 now", "--overwrite"), setup=finished_run),
    Case("another width into a finished run", run_args("fin/answers.json", "--width", "4", "--num_samples", "3",
                                                        *SCRIPTED),
         ("fin holds another run", "width 2 then, 4 now"), setup=finished_run),
    Case("another setting into an interrupted run", run_args("fin/answers.json", "--width", "2", "--num_samples", "3",
                                                              "--set", "temperature=0.5", *SCRIPTED),
         ("fin holds another run", "temperature 1.0 then, 0.5 now"),
         setup=lambda: (finished_run(), [Path("fin", name).unlink() for name in ("answers.json", "run.json")])),
    Case("an answers.json not written by ets run", run_args("theirs/answers.json", *SCRIPTED),
         ("theirs holds another run", "answers.json with no run.json or checkpoints"),
         setup=lambda: answers_file("theirs/answers.json")),
    # ---- ets evaluate
    Case("evaluate --output_path into a missing directory",
         ["evaluate", "--path", "a.json", "--agg_func", "last", "--output_path", "nodir/acc.txt"],
         ("--output_path nodir/acc.txt", "nodir does not exist"), setup=lambda: answers_file("a.json")),
    Case("evaluate --output_path is a directory",
         ["evaluate", "--path", "a.json", "--agg_func", "last", "--output_path", "d"],
         ("--output_path d is a directory",), setup=lambda: (answers_file("a.json"), Path("d").mkdir())),
    Case("evaluate trajectories without text", ["evaluate", "--path", "a.json", "--agg_func", "last"],
         ("a.json", "model_answer[0]", "no 'text'"), setup=lambda: answers_file("a.json", text=None)),
    Case("evaluate a file that is not UTF-8", ["evaluate", "--path", "a.json", "--agg_func", "last"],
         ("a.json", "not UTF-8"), setup=lambda: write("a.json", b'[{"\xff": 1}]')),
    Case("evaluate a missing run", ["evaluate", "--path", "norun", "--agg_func", "last"],
         ("norun", "no such file")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_refused_in_one_line_and_nothing_changes(case, tmp_path, monkeypatch, capsys):
    if any(arg.startswith(("/proc/", "/sys/")) for arg in case.argv) and not Path("/sys/kernel").is_dir():
        pytest.skip("not Linux: no /proc or /sys")
    monkeypatch.chdir(tmp_path)
    case.setup()
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(case.argv)
    err = capsys.readouterr().err
    assert code == case.code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(f"ets {case.argv[0]}:")]
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1], err
    for culprit in case.culprit:
        assert culprit in errors[0]
    assert snapshot(tmp_path) == before


def test_debug_shows_the_traceback_and_a_bug_is_named_as_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(run_args("out/answers.json", "--policy_host", "", "--debug")) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("ets run: --policy_host: no server URL")

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("ets.commands.run.load_problems", broken)  # where `ets run` looks it up
    assert main(run_args("out/answers.json", *SCRIPTED)) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("ets run: internal error, a bug in ets (ZeroDivisionError: division by zero); "
                           "run again with --debug for the traceback and report it")
    with pytest.raises(ZeroDivisionError):
        main(run_args("out/answers.json", *SCRIPTED, "--debug"))


# ------------------------------------------------------------------ recovered, and said so


def read_json(path) -> object:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_damaged_checkpoints_are_dropped_named_and_searched_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    finished_run("clean/answers.json", "--num_samples", "4")
    finished_run("fin/answers.json", "--num_samples", "4")
    write("fin/trees/q0.json", "[1, 2]")
    write("fin/trees/q1.json", b"\xff\xfe")
    damaged = read_json("fin/trees/q2.json")
    damaged["stats"]["model_calls"] = "many"
    write("fin/trees/q2.json", json.dumps(damaged))
    write("fin/trees/q3.json", '{"fingerprint": ')  # a write cut short
    capsys.readouterr()
    assert main(run_args("fin/answers.json", "--num_samples", "3", "--width", "2", "--scripted")) == 2
    assert "ids 3" in capsys.readouterr().err  # a damaged checkpoint is no reason to refuse, a 4th problem is
    assert main(run_args("fin/answers.json", "--num_samples", "4", "--width", "2", "--scripted")) == 0
    said = capsys.readouterr().err
    assert ("fin: 0 of 4 problems taken from checkpoints, 4 dropped and searched again: "
            "q0.json (a JSON list, not a checkpoint object); q1.json (not UTF-8); "
            "q2.json (bad 'stats' (expected a non-negative number for each statistic)); q3.json (not valid JSON)") in said
    assert Path("fin/answers.json").read_bytes() == Path("clean/answers.json").read_bytes()


def test_resume_takes_ground_truths_from_the_dataset_as_it_is_now(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    records = [json.loads(line) for line in Path(GSM8K).read_text().splitlines()]
    write("d.jsonl", "\n".join(map(json.dumps, records)) + "\n")
    assert main(run_args("run/answers.json", "--width", "2", *SCRIPTED, input_path="d.jsonl")) == 0
    first = read_json("run/answers.json")
    records[1]["answer"] = "corrected\n#### 99"
    write("d.jsonl", "\n".join(map(json.dumps, records)) + "\n")
    assert main(run_args("run/answers.json", "--width", "2", "--scripted", input_path="d.jsonl")) == 0
    assert "run: 5 of 5 problems taken from checkpoints" in capsys.readouterr().err
    again = read_json("run/answers.json")
    assert [a["ground_truth_answer"] for a in again] == [r["answer"] for r in records]
    assert again[1]["ground_truth_answer"] != first[1]["ground_truth_answer"]
    assert [a["model_answer"] for a in again] == [a["model_answer"] for a in first]


def test_yaml_1_2_floats_and_a_byte_order_mark_are_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write("c.yaml", "width: 2\nlambdac: 1e-3\nsoftmax_temperature: 5E-1\n")
    write("d.jsonl", "\ufeff" + Path(GSM8K).read_text().splitlines()[0] + "\n")
    assert main(run_args("run/answers.json", "--config", "c.yaml", "--set", "lambdas=1e0", *SCRIPTED,
                         input_path="d.jsonl")) == 0
    config = read_json("run/run.json")["config"]
    assert (config["lambdac"], config["softmax_temperature"], config["lambdas"]) == (0.001, 0.5, 1.0)
    assert read_json("run/answers.json")[0]["question"].startswith("Janet")


def test_more_problems_extend_a_run_and_overwrite_replaces_another_entirely(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    finished_run()  # 3 problems
    capsys.readouterr()
    assert main(run_args("fin/answers.json", "--width", "2", "--num_samples", "5", "--scripted")) == 0
    assert "fin: 3 of 5 problems taken from checkpoints" in capsys.readouterr().err
    assert len(read_json("fin/answers.json")) == 5
    other_dataset()  # 3 problems, the second another question
    assert main(run_args("fin/answers.json", "--width", "2", "--overwrite", *SCRIPTED, input_path="other.jsonl")) == 0
    assert sorted(p.name for p in Path("fin/trees").iterdir()) == ["q0.json", "q1.json", "q2.json"]
    assert [a["question"] for a in read_json("fin/answers.json")][1] == "What is 2+2?"
    assert read_json("fin/run.json")["num_problems"] == 3


# ------------------------------------------------------------------ servers that hang


@pytest.fixture
def silent_server():
    """Accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


def test_a_server_that_never_answers_fails_the_start_check_within_seconds(silent_server, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    code = main(run_args("out/answers.json", "--policy_host", silent_server, "--reward_host", silent_server,
                         "--reward_api", "ets", "--quiet"))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no answer within 10s" in err and f"({silent_server}/v1/models)" in err and "--policy_host" in err
    assert "checkpointed" not in err  # nothing was: the run never started
    assert 10 <= elapsed < 14  # the documented start check: 10 seconds
    assert snapshot(tmp_path) == {}


def test_a_request_that_hangs_mid_run_fails_after_request_timeout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with StandinServer("openai", model="m", hang=True) as policy, StandinServer("sglang", model="prm") as reward:
        started = time.monotonic()
        code = main(run_args("out/answers.json", "--policy_host", policy.url, "--reward_host", reward.url,
                             "--request_timeout", "1", "--num_samples", "1", "--quiet"))
        elapsed = time.monotonic() - started
        policy.hang = False
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no answer within 1s" in err and policy.url in err and "raise --request_timeout" in err
    assert elapsed < 4  # one timeout, not one per retry or fallback
    assert not list(Path("out").rglob("q*.json"))


class RefusingOne(StandinServer):
    """A policy server that refuses to sample steps for one question."""

    refused = ""

    def openai_completions(self, body: dict) -> tuple[int, dict]:
        if self.refused and "n" in body and self.refused in body["prompt"]:
            return 400, {"object": "error", "message": "stand-in refuses this prompt", "code": 400}
        return super().openai_completions(body)


def test_a_server_failure_says_what_is_checkpointed_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    third = json.loads(Path(GSM8K).read_text().splitlines()[2])["question"]
    with RefusingOne("openai", model="m") as policy, StandinServer("sglang", model="prm") as reward:
        flags = ["--policy_host", policy.url, "--reward_host", reward.url, "--num_samples", "3", "--width", "2",
                 "--set", "num_threads=1"]
        policy.refused = third
        assert main(run_args("out/answers.json", *flags, "--quiet")) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert err.startswith("ets run: policy server refused POST /v1/completions: HTTP 400: stand-in refuses")
        assert err.strip().endswith("; 2 finished problem(s) are checkpointed in out: run the same command again "
                                    "to resume")
        policy.refused = ""
        assert main(run_args("out/answers.json", *flags)) == 0
    assert "out: 2 of 3 problems taken from checkpoints" in capsys.readouterr().err
    assert len(read_json("out/answers.json")) == 3


# ------------------------------------------------------------------ interrupted runs resume to the same files


def cli(*args: str) -> subprocess.Popen:
    src = str(Path(ets.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Ctrl-C as at a terminal: a shell's background job (a CI script run with `&`) starts its children with
    # SIGINT ignored, and Python then installs no handler for it
    return subprocess.Popen([sys.executable, "-m", "ets", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def without_times(tree: dict) -> dict:
    tree.pop("run_elapsed")
    tree["stats"].pop("time")
    return tree


def assert_same_run(run: Path, reference: Path) -> None:
    assert (run / "answers.json").read_bytes() == (reference / "answers.json").read_bytes()
    names = sorted(p.name for p in (run / "trees").iterdir())
    assert names == sorted(p.name for p in (reference / "trees").iterdir()) == [f"q{i}.json" for i in range(5)]
    for name in names:  # everything but the wall times
        assert without_times(read_json(run / "trees" / name)) == without_times(read_json(reference / "trees" / name))
    assert (run / "stats.log").read_text().splitlines()[:3] == (reference / "stats.log").read_text().splitlines()[:3]
    summaries = [read_json(d / "run.json") for d in (run, reference)]
    for summary in summaries:
        summary["stats"].pop("time")
    assert [(s["config"], s["stats"], s["num_problems"]) for s in summaries][0] == \
        [(s["config"], s["stats"], s["num_problems"]) for s in summaries][1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_killed_run_resumes_to_the_files_of_an_uninterrupted_one(sig, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["--width", "4", "--select_method", "softmax", "--set", "num_threads=2", "--scripted"]
    assert main(run_args("reference/answers.json", *flags, "--quiet")) == 0

    proc = cli(*run_args("run/answers.json", *flags, "--scripted_delay", "0.3"))
    deadline = time.monotonic() + 60
    while not Path("run/trees/q0.json").exists() and not Path("run/trees/q1.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert not Path("run/answers.json").exists()  # stopped mid-run
    saved = sorted(p.name for p in Path("run/trees").glob("q*.json"))
    assert 1 <= len(saved) < 5
    if sig != signal.SIGKILL:
        code, said = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}[sig]
        assert proc.returncode == code and "Traceback" not in err
        assert err.splitlines()[-1] == (f"ets run: {said}; {len(saved)} finished problem(s) are checkpointed in "
                                        "run: run the same command again to resume")
    else:
        assert proc.returncode == -signal.SIGKILL

    capsys.readouterr()
    assert main(run_args("run/answers.json", *flags)) == 0
    assert f"run: {len(saved)} of 5 problems taken from checkpoints" in capsys.readouterr().err
    assert_same_run(Path("run"), Path("reference"))
    assert not [p for p in Path("run").rglob("*.tmp")]  # a write cut short leaves no litter behind
