"""How `ets run` shows its progress: plain lines when stderr is a log or a pipe, a tqdm bar
per run directory on a terminal, nothing with --quiet."""

import asyncio
import io
import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ets
import ets.progress
from ets.backends.base import Backends
from ets.backends.scripted import ScriptedReward, toy_world
from ets.cli import main
from ets.datasets import load_problems
from ets.progress import Bar, Lines, Progress, for_stream
from ets.runner import run_problems

GSM8K = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"  # 5 problems
COUNT_LINE = re.compile(r"(.+): (\d+)/(\d+) problems done \(\d+\.\ds\)")


class Recorder(Progress):
    """Every event a runner sends, in order."""

    def __init__(self):
        self.events = []

    def start(self, label, total, resumed=0):
        self.events.append(("start", Path(label).name, total, resumed))

    def done(self):
        self.events.append(("done",))

    def message(self, text):
        self.events.append(("message", text))

    def close(self):
        self.events.append(("close",))


def run(out: Path, *flags: str) -> list[str]:
    return ["run", "--input_path", str(GSM8K), "--output_path", str(out / "answers.json"), "--scripted",
            "--select_method", "softmax", *flags]


def count_lines(err: str) -> list[tuple[str, int, int]]:
    return [(m[1], int(m[2]), int(m[3])) for m in map(COUNT_LINE.fullmatch, err.splitlines()) if m]


def test_plain_lines_count_every_problem_without_a_guess_at_the_time_left(tmp_path, capsys):
    assert main(run(tmp_path / "run", "--width", "2", "--num_samples", "3")) == 0
    err = capsys.readouterr().err
    run_dir = str(tmp_path / "run")
    assert count_lines(err) == [(run_dir, 1, 3), (run_dir, 2, 3), (run_dir, 3, 3)]
    assert err.splitlines()[-1].startswith(f"{run_dir}: 3/3 problems done (")
    assert "left" not in err and "\r" not in err  # no ETA guess in a log, no bar redraws

    # resumed: the count starts at the checkpoints taken, and the resume note comes first
    assert main(run(tmp_path / "run", "--width", "2")) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[1] == f"{run_dir}: 3 of 5 problems taken from checkpoints"
    assert count_lines("\n".join(err)) == [(run_dir, 4, 5), (run_dir, 5, 5)]


def test_plain_lines_of_a_sweep_one_run_directory_after_another(tmp_path, capsys):
    assert main(run(tmp_path / "sweep", "--width", "2", "4")) == 0
    captured = capsys.readouterr()
    said = [(Path(label).name, k) for label, k, n in count_lines(captured.err)]
    assert said == [("width_2", k) for k in range(1, 6)] + [("width_4", k) for k in range(1, 6)]
    assert "softmax width 4: 5 problems" in captured.out  # the summaries stay on stdout


def test_plain_lines_stay_few_for_a_long_run(monkeypatch):
    lines = []
    progress = Lines(lines.append)
    progress.start("big", 1000, resumed=1)
    for _ in range(999):
        progress.done()
    assert len(lines) == ets.progress.MAX_COUNT_LINES  # every 10th problem
    assert lines[0].startswith("big: 10/1000 problems done") and lines[-1].startswith("big: 1000/1000 problems done")

    monkeypatch.setattr(ets.progress, "HEARTBEAT_SECONDS", 0.0)  # a slow run: a line whenever one finishes
    lines.clear()
    progress.start("slow", 1000)
    progress.done()
    assert lines == [lines[0]] and lines[0].startswith("slow: 1/1000 problems done")


def test_the_runner_sends_events_and_closes_on_failure(tmp_path):
    problems = load_problems(str(GSM8K), num_samples=3)
    policy, reward = toy_world()
    config = ets.SearchConfig(width=2, select_method="softmax", prompt_format="raw", num_threads=1)
    recorder = Recorder()
    toy = Backends(policy, reward, description={"policy": "toy"})
    asyncio.run(run_problems(problems[:2], config, toy, tmp_path / "run", progress=recorder))
    assert recorder.events == [("start", "run", 2, 0), ("done",), ("done",), ("close",)]

    # the third problem's PRM fails: the two checkpointed are resumed, and the bar is closed before the error
    broken = ScriptedReward(lambda q, steps: None if q == problems[2].question else reward.score_fn(q, steps))
    recorder = Recorder()
    with pytest.raises(ets.SearchError):
        asyncio.run(run_problems(problems, config, Backends(policy, broken, description=toy.description),
                                 tmp_path / "run", progress=recorder))
    assert recorder.events == [("message", f"{tmp_path / 'run'}: 2 of 3 problems taken from checkpoints"),
                               ("start", "run", 3, 2), ("close",)]


def test_quiet_prints_nothing_on_stderr(tmp_path, capsys):
    assert main(run(tmp_path / "run", "--width", "2", "--num_samples", "2", "--quiet")) == 0
    assert main(run(tmp_path / "run", "--width", "2", "--quiet")) == 0  # a resume says nothing either
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "softmax width 2: 5 problems" in captured.out


def test_the_form_follows_the_stream(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert type(for_stream(Terminal())) is Bar
    assert type(for_stream(io.StringIO())) is Lines
    assert type(for_stream(Terminal(), quiet=True)) is Progress
    monkeypatch.setenv("TERM", "dumb")  # an editor's shell buffer: cannot redraw a line
    assert type(for_stream(Terminal())) is Lines


def visible(screen: str) -> list[str]:
    """What a terminal shows: each line as its last carriage return left it."""
    return [line.split("\r")[-1].rstrip() for line in screen.replace("\r\n", "\n").split("\n")]


BAR = re.compile(r"(?P<label>.+): +(?P<pct>\d+)%\|.*\| (?P<n>\d+)/(?P<total>\d+) "  # tqdm's default look
                 r"\[(?P<elapsed>\d\d:\d\d)<(?P<eta>\d\d:\d\d|\?), +"
                 r"(?P<rate>[\d.]+(?:problem/s|s/problem)|\?problem/s)\]")


def test_messages_and_warnings_go_above_the_bar():
    screen = io.StringIO()
    bar = Bar(screen)
    bar.start("run", 4, resumed=1)
    bar.done()
    bar.message("worker 1 on node 127.0.0.1 died; its problems go to the other workers")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's warning", UserWarning)
    bar.done()
    bar.done()
    bar.close()
    bar.close()  # twice is fine
    shown = [line for line in visible(screen.getvalue()) if line]
    assert shown[0] == "worker 1 on node 127.0.0.1 died; its problems go to the other workers"
    assert shown[1].endswith("UserWarning: a library's warning")  # (then the line that warned)
    assert [bool(BAR.fullmatch(line)) for line in shown] == [False] * (len(shown) - 1) + [True]  # one bar, below
    assert BAR.fullmatch(shown[-1])["n"] == "4"
    assert warnings.showwarning is not bar._warning  # given back when the bar closed


def tty_run(args: list[str], cwd: Path, size: tuple[int, int]) -> str:
    """`ets ARGS` with stdout and stderr on a pseudo-terminal of ``size`` (lines, columns), as a user at a
    terminal runs it; what it wrote."""
    import fcntl
    import termios

    main_fd, sub_fd = os.openpty()
    fcntl.ioctl(sub_fd, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen([sys.executable, "-m", "ets", *args], stdin=subprocess.DEVNULL, stdout=sub_fd,
                            stderr=sub_fd, cwd=cwd, env=env)
    os.close(sub_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    assert proc.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals here")
@pytest.mark.parametrize("size", [(30, 120), (0, 0)], ids=["terminal", "terminal-of-no-size"])
def test_a_terminal_gets_one_bar_per_run_directory_with_count_rate_and_eta(tmp_path, size):
    common = ["--input_path", str(GSM8K), "--scripted", "--select_method", "softmax", "--scripted_delay", "0.02",
              "--set", "num_threads=1"]  # one problem at a time: the bar is drawn between them
    # width 2 has 3 problems checkpointed already: its bar starts there
    assert main(["run", *common, "--output_path", str(tmp_path / "out" / "width_2"), "--width", "2",
                 "--num_samples", "3", "--quiet"]) == 0
    screen = tty_run(["run", *common, "--output_path", "out/answers.json", "--width", "2", "4"], tmp_path, size)
    assert "problems done" not in screen  # no plain lines on a terminal

    # every drawing of a bar, in order: width_2's starts at the 3 resumed, then redrawn as problems finish
    drawn = [m for m in (BAR.fullmatch(part.rstrip()) for part in re.split(r"[\r\n]", screen)) if m]
    assert (Path(drawn[0]["label"]).name, drawn[0]["n"], drawn[0]["total"]) == ("width_2", "3", "5")
    assert any(m["n"] != m["total"] and m["eta"] != "?" for m in drawn)  # an ETA while the run goes on

    # what stays on screen: the notes, then per run directory its final bar with the summary lines below it
    shown = [line for line in visible(screen) if line]
    assert shown[0].startswith("note: --scripted")
    assert shown[1] == "out/width_2: 3 of 5 problems taken from checkpoints"
    finals = [(i, m) for i, m in enumerate(map(BAR.fullmatch, shown)) if m]
    assert [(Path(m["label"]).name, m["n"], m["total"], m["pct"]) for _, m in finals] == [
        ("width_2", "5", "5", "100"), ("width_4", "5", "5", "100")]
    for i, m in finals:
        assert m["rate"] != "?problem/s" and m["eta"] == "00:00"  # a measured rate; nothing left
        assert shown[i + 1].startswith(f"softmax width {m['label'][-1]}: 5 problems -> ")  # whole, below its bar
