"""`ets run`, round two: work that must not be lost, and input refused in one line before anything starts.

* an extension to more problems, interrupted, keeps the finished run's files, resumes, and leaves the
  original command working;
* the run's files get the umask's permissions;
* widths, Ray workers, output names, embedder folders, dataset slices and over-long path names are
  refused with exit 2 and one line naming what to fix, before any model or Ray starts;
* Ctrl-C and SIGTERM stop the set-up with one line (130, 143), not a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_bad_inputs
from test_bad_inputs import GSM8K, SCRIPTED, Case, cli, run_args, write

import ets
from ets.backends.base import Backends
from ets.backends.scripted import ScriptedReward, toy_world
from ets.cli import main
from ets.datasets import DatasetError, Problem, load_problems
from ets.runner import RunDirError, run_problems

FINALS = ("answers.json", "stats.log", "run.json")
LONG = "n" * 300  # one name over the 255 bytes a file system takes


def read_json(path) -> object:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def finals(run: str | Path) -> dict[str, bytes]:
    return {name: (Path(run) / name).read_bytes() for name in FINALS}


# ------------------------------------------------------------------ an extension, interrupted, loses nothing


def test_an_interrupted_extension_keeps_the_finished_run_and_the_original_command_still_works(tmp_path, monkeypatch,
                                                                                              capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["--width", "4", "--set", "num_threads=1", "--scripted"]
    assert main(run_args("run/answers.json", "--num_samples", "3", *flags, "--quiet")) == 0
    finished = finals("run")
    assert main(run_args("whole/answers.json", "--num_samples", "5", *flags, "--quiet")) == 0  # the reference

    # extend to 5 problems, Ctrl-C once the 4th is checkpointed (the 5th is slowed down)
    proc = cli(*run_args("run/answers.json", "--num_samples", "5", *flags, "--scripted_delay", "0.3"))
    deadline = time.monotonic() + 60
    while not Path("run/trees/q3.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert sorted(p.name for p in Path("run/trees").glob("q*.json")) == [f"q{i}.json" for i in range(4)]
    assert finals("run") == finished  # the finished 3-problem run's files, untouched

    # the original command is accepted and gives the 3-problem run as it was
    capsys.readouterr()
    assert main(run_args("run/answers.json", "--num_samples", "3", *flags)) == 0
    err = capsys.readouterr().err
    assert "run: 3 of 3 problems taken from checkpoints; 1 checkpoint(s) of problems beyond this run kept" in err
    assert Path("run/answers.json").read_bytes() == finished["answers.json"]
    assert Path("run/stats.log").read_text().splitlines()[:3] == finished["stats.log"].decode().splitlines()[:3]
    assert read_json("run/run.json")["num_problems"] == 3

    # the extension resumes from its 4 checkpoints and ends as an uninterrupted 5-problem run
    assert main(run_args("run/answers.json", "--num_samples", "5", *flags)) == 0
    assert "run: 4 of 5 problems taken from checkpoints" in capsys.readouterr().err
    assert Path("run/answers.json").read_bytes() == Path("whole/answers.json").read_bytes()

    # with the 5-problem run finished, 3 problems would replace its answers by fewer: refused, naming them
    assert main(run_args("run/answers.json", "--num_samples", "3", *flags)) == 2
    assert "its finished answers.json holds 2 problem(s) this run does not have (ids 3, 4; this run has 3)" in \
        capsys.readouterr().err


def test_a_failed_extension_keeps_the_finished_files_and_overwrite_still_replaces_them(tmp_path):
    problems = load_problems(GSM8K)
    policy, reward = toy_world()
    config = ets.SearchConfig(width=3, select_method="softmax", prompt_format="raw", num_threads=1)
    backends = Backends(policy, reward, description={"policy": "toy"})
    asyncio.run(run_problems(problems[:2], config, backends, tmp_path))
    finished = finals(tmp_path)

    def score_fn(question, steps):  # the PRM breaks on the last problem
        return None if question == problems[4].question else reward.score_fn(question, steps)

    broken = Backends(policy, ScriptedReward(score_fn), description={"policy": "toy"})
    with pytest.raises(ets.SearchError):
        asyncio.run(run_problems(problems, config, broken, tmp_path))
    assert finals(tmp_path) == finished
    assert sorted(p.name for p in (tmp_path / "trees").iterdir()) == [f"q{i}.json" for i in range(4)]
    assert asyncio.run(run_problems(problems[:2], config, backends, tmp_path)).resumed == 2  # the original run
    assert asyncio.run(run_problems(problems[:3], config, backends, tmp_path)).resumed == 3  # a part of the extension

    # --overwrite is asked to discard the earlier run: its final files go with its checkpoints, at the start
    with pytest.raises(ets.SearchError):
        asyncio.run(run_problems(problems, config.replace(lambdac=2.0), broken, tmp_path, resume=False))
    assert not any((tmp_path / name).exists() for name in FINALS)


def test_checkpoints_beyond_the_run_are_no_reason_to_refuse_but_another_question_among_them_is(tmp_path):
    problems = load_problems(GSM8K)
    policy, reward = toy_world()
    config = ets.SearchConfig(width=2, select_method="softmax", prompt_format="raw")
    backends = Backends(policy, reward, description={"policy": "toy"})
    asyncio.run(run_problems(problems, config, backends, tmp_path))
    for name in FINALS:  # an interrupted 5-problem run: checkpoints only
        (tmp_path / name).unlink()
    assert asyncio.run(run_problems(problems[:2], config, backends, tmp_path)).resumed == 2
    assert len(read_json(tmp_path / "answers.json")) == 2
    changed = [problems[0], *(Problem(p.id, p.question + " Really?", p.answer, p.record) for p in problems[1:])]
    with pytest.raises(RunDirError, match=r"problem 1 is another question"):
        asyncio.run(run_problems(changed, config, backends, tmp_path))


# ------------------------------------------------------------------ the files' permissions


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_run_files_get_the_umasks_permissions(mask, mode, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = os.umask(mask)
    try:
        assert main(run_args("run/answers.json", "--num_samples", "2", "--width", "2", *SCRIPTED)) == 0
    finally:
        os.umask(before)
    for path in [*(Path("run") / name for name in FINALS), *Path("run/trees").iterdir()]:
        assert oct(path.stat().st_mode & 0o777) == oct(mode), path


# ------------------------------------------------------------------ refused before anything starts


def no_ray(*args, **kwargs):
    raise AssertionError("Ray was started")


CASES = [
    Case("--width over the maximum", run_args("out/answers.json", "--width", "1000000000", *SCRIPTED),
         ("width 1000000000", "at most 4096", "pair of a step's candidates")),
    Case("a width over the maximum in a sweep", run_args("out/answers.json", "--width", "4", "4097", *SCRIPTED),
         ("width 4097", "at most 4096")),
    Case("a config width over the maximum", run_args("out/answers.json", "--set", "width=100000", *SCRIPTED),
         ("width 100000", "at most 4096")),
    Case("--ray_workers 0", run_args("out/answers.json", "--ray", "--ray_workers", "0", *SCRIPTED),
         ("--ray_workers", ">= 1", "got 0")),
    Case("--ray_workers without --ray", run_args("out/answers.json", "--ray_workers", "2", *SCRIPTED),
         ("--ray_workers", "only a --ray run", "add --ray")),
    Case("--embed_model not there", run_args("out/answers.json", "--embed_model", "/nonexistent", "--quiet"),
         ("--embed_model /nonexistent", "no such folder", "Hugging Face id")),
    Case("--embed_model a file", run_args("out/answers.json", "--embed_model", "e.bin", *SCRIPTED),
         ("--embed_model e.bin", "a file", "model folder"), setup=lambda: write("e.bin", "x")),
    Case("embed_model of the config not there", run_args("out/answers.json", "--set", "embed_model=./models/mini",
                                                         "--set", "lambdas=1", "--quiet"),
         ("embed_model ./models/mini", "no such folder")),
    Case("an empty slice of a file", run_args("out/answers.json", *SCRIPTED, input_path="d.jsonl[7:5]"),
         ("d.jsonl[7:5]", "the slice selects no problems", "d.jsonl has 5 (ids 0 to 4)"),
         setup=lambda: write("d.jsonl", Path(GSM8K).read_text())),
    Case("a slice beyond a file", run_args("out/answers.json", *SCRIPTED, input_path="d.jsonl[10:]"),
         ("d.jsonl[10:]", "the slice selects no problems", "has 5"),
         setup=lambda: write("d.jsonl", Path(GSM8K).read_text())),
    Case("a name over 255 bytes in --output_path", run_args(f"{LONG}/answers.json", *SCRIPTED),
         ("--output_path nnnnnnnnnnnnnnnnnnnn…nnnnnnnn (300 bytes)/answers.json", "longer than the 255 bytes")),
    Case("an answers file name over 255 bytes", run_args(f"out/{LONG}.json", *SCRIPTED),
         ("--output_path out/nnnnnnnnnnnnnnnnnnnn…nnn.json (305 bytes)", "longer than the 255 bytes")),
    Case("a name over 255 bytes in --input_path", run_args("out/answers.json", *SCRIPTED, input_path=f"{LONG}.jsonl"),
         ("--input_path nnnnnnnnnnnnnnnnnnnn…nn.jsonl (306 bytes)", "longer than the 255 bytes")),
    Case("a name over 255 bytes in --config", run_args("out/answers.json", "--config", f"{LONG}.yaml", *SCRIPTED),
         ("--config nnnnnnnnnnnnnnnnnnnn…nnn.yaml (305 bytes)",)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_refused_in_one_line_before_anything_starts(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ets.commands.run.run_problems_ray", no_ray)
    monkeypatch.setattr("ets.commands.run.build_backends", no_ray)  # no model loads either
    # one line naming the culprits, no traceback, nothing written: round one's check, these cases
    test_bad_inputs.test_refused_in_one_line_and_nothing_changes(case, tmp_path, monkeypatch, capsys)


def test_an_empty_slice_of_a_builtin_set_names_the_slice_not_the_installed_file():
    try:
        size = len(load_problems("asdiv"))
    except DatasetError as exc:
        pytest.skip(f"the built-in sets are not installed: {exc}")
    with pytest.raises(DatasetError) as info:
        load_problems("asdiv[7:5]")
    assert str(info.value) == f"asdiv[7:5]: the slice selects no problems; asdiv has {size} (ids 0 to {size - 1})"
    assert len(load_problems("asdiv[7:9]")) == 2


def test_an_over_long_dataset_name_is_a_dataset_error_naming_it():
    with pytest.raises(DatasetError, match=r"dataset nnnn.*\.jsonl: File name too long"):
        load_problems(f"{LONG}.jsonl")


def test_a_json_suffix_in_any_case_is_a_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write("UP.JSONL", Path(GSM8K).read_text())
    assert main(run_args("out/answers.JSON", "--num_samples", "2", "--width", "2", *SCRIPTED,
                         input_path="UP.JSONL")) == 0
    assert Path("out/answers.JSON").is_file() and not Path("out/answers.json").exists()
    assert len(read_json("out/answers.JSON")) == 2
    # the same command resumes: its answers file is the one the identity check reads
    assert main(run_args("out/answers.JSON", "--num_samples", "2", "--width", "2", *SCRIPTED,
                         input_path="UP.JSONL")) == 0


def test_a_hub_id_for_the_embedder_is_left_to_load(tmp_path, monkeypatch):
    from ets.commands.run import check_embed_model

    config = ets.SearchConfig(embed_model="sentence-transformers/all-MiniLM-L6-v2", lambdas=1.0)
    check_embed_model(config, given=True)  # not a folder here, but a name the hub may have
    check_embed_model(ets.SearchConfig(embed_model="/nowhere", lambdas=0.0), given=False)  # never loaded: no check


# ------------------------------------------------------------------ signals during set-up


def wait_blocked_on_fifo(proc: subprocess.Popen) -> None:
    """Until the command waits to open the FIFO given as its dataset: it is in its set-up."""
    deadline = time.monotonic() + 30
    wchan = Path(f"/proc/{proc.pid}/wchan")
    while time.monotonic() < deadline:
        assert proc.poll() is None
        try:
            if "fifo" in wchan.read_text() or "partner" in wchan.read_text():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("the command never reached the dataset")


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux's /proc/PID/wchan")
@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_set_up_is_one_line(sig, code, said, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo("data.jsonl")  # reading it blocks: the run is held in its set-up
    proc = cli(*run_args("out/answers.json", *SCRIPTED, input_path="data.jsonl"))
    wait_blocked_on_fifo(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"ets run: {said}"]
    assert not Path("out").exists()


def test_ctrl_c_while_the_commands_load_is_one_line(monkeypatch, capsys):
    def loading(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ets.cli.build_parser", loading)  # where the subcommands' modules are imported
    assert main(["run", "--input_path", GSM8K]) == 130
    assert capsys.readouterr().err == "ets: interrupted\n"


def test_ctrl_c_while_ets_itself_loads_is_one_line(monkeypatch, capsys):
    """The console script's guard (src/ets_launch.py): ets's modules load inside it, so a Ctrl-C during
    `import ets` (numpy, the config: the first half second) is one line and exit 130, not a traceback."""
    import builtins

    import ets_launch

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "ets.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert ets_launch.main() == 130
    assert capsys.readouterr().err == "ets: interrupted\n"
    monkeypatch.setattr(builtins, "__import__", real_import)
    script = Path(sys.executable).with_name("ets")
    if script.exists():  # the installed console script goes through the guard
        assert "from ets_launch import main" in script.read_text()


SIGTERM_IN_A_BUSY_LOOP = """
import asyncio, os, signal, threading, time
from ets.cli import main, Terminated
from ets.commands.run import cancel_on_sigterm

async def busy():
    cancel_on_sigterm(asyncio.current_task())
    for _ in range(2):  # two SIGTERMs while the loop is held by work that never yields (a model loading)
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        time.sleep(0.5)
    time.sleep(30)

try:
    asyncio.run(busy())
except Terminated:
    print("terminated at once")
"""


def test_a_second_sigterm_stops_a_loop_held_by_work_that_does_not_yield():
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", SIGTERM_IN_A_BUSY_LOOP], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "terminated at once", out.stderr
    assert time.monotonic() - started < 10


def test_the_library_refuses_zero_ray_workers_before_ray_starts(monkeypatch, tmp_path):
    from ets.backends.factory import BackendSpec
    from ets.distributed import run_problems_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # importing or starting Ray would fail differently
    with pytest.raises(ValueError, match=r"num_workers must be >= 1, got 0"):
        run_problems_ray(load_problems(GSM8K), ets.SearchConfig(), BackendSpec(scripted=True), tmp_path, num_workers=0)
    assert not any(tmp_path.iterdir())
