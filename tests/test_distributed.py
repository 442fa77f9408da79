"""The Ray runner: the same run directory as the local runner, resume, errors.

One local Ray cluster (2 CPUs, bound to 127.0.0.1) serves the whole module;
its start-up is most of the module's time."""

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's servers on 127.0.0.1 only
import ray  # noqa: E402

import ets  # noqa: E402
from ets.backends.base import BackendError  # noqa: E402
from ets.backends.factory import BackendSpec, build_backends  # noqa: E402
from ets.datasets import Problem, load_problems  # noqa: E402
from ets.distributed import RayNotInstalled, run_problems_ray  # noqa: E402
from ets.runner import run_problems  # noqa: E402
from test_progress import Recorder  # noqa: E402

GSM8K = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"
SPEC = BackendSpec(scripted=True)
FIGURES = ("kv_cache_size", "model_calls", "tokens_generated", "expansions")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def problems():
    loaded = load_problems(str(GSM8K))
    extra = Problem(id=len(loaded), question="Tom has 3 apples and buys 4 more. How many apples does he have?",
                    answer="#### 7", record={})
    return [*loaded, extra]  # 6 problems


def config(**changes):
    return ets.SearchConfig(width=4, select_method="softmax", prompt_format="raw", num_threads=2).replace(**changes)


def local_run(problems, cfg, run_dir):
    return asyncio.run(run_problems(problems, cfg, build_backends(SPEC, cfg), run_dir))


def same_run(ray_dir: Path, local_dir: Path, problems) -> None:
    assert json.loads((ray_dir / "answers.json").read_text()) == json.loads((local_dir / "answers.json").read_text())
    ray_stats = json.loads((ray_dir / "run.json").read_text())["stats"]
    local_stats = json.loads((local_dir / "run.json").read_text())["stats"]
    assert {k: ray_stats[k] for k in FIGURES} == {k: local_stats[k] for k in FIGURES}
    # stats.log: the same figures (the time line differs)
    assert (ray_dir / "stats.log").read_text().splitlines()[:3] == (local_dir / "stats.log").read_text().splitlines()[:3]
    for p in problems:
        trees = [json.loads((d / "trees" / f"q{p.id}.json").read_text()) for d in (ray_dir, local_dir)]
        for tree in trees:
            del tree["stats"]["time"]  # wall times: the one thing that differs
            del tree["run_elapsed"]
        assert trees[0] == trees[1]


def failing_factory(bad_question):
    """Backends whose PRM breaks on one problem (shipped to the workers by value)."""

    def build(spec, cfg):
        backends = build_backends(spec, cfg)
        score_fn = backends.reward.score_fn

        def score(question, steps):
            return None if question == bad_question else score_fn(question, steps)

        backends.reward.score_fn = score
        return backends

    return build


def test_ray_run_equals_local_run(cluster, problems, tmp_path):
    cfg = config()
    local = local_run(problems, cfg, tmp_path / "local")
    progress = Recorder()
    summary = run_problems_ray(problems, cfg, SPEC, tmp_path / "ray", num_workers=2, progress=progress)
    same_run(tmp_path / "ray", tmp_path / "local", problems)
    assert summary.resumed == 0 and summary.answers == local.answers
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["distributed"]["workers"] == 2 and run["distributed"]["ray_address"]
    assert run["backends"] == {"policy": "scripted toy world", "reward": "scripted toy world"}
    # the same progress events as the local runner's: the run starts, each problem is done, the bar closes
    events = [e for e in progress.events if e[0] != "message"]
    assert events == [("start", "ray", 6, 0), *[("done",)] * 6, ("close",)]
    assert any(e[0] == "message" and "2 workers" in e[1] for e in progress.events)

    # the checkpoints are the local runner's: a distributed run over a local run directory searches nothing
    summary = run_problems_ray(problems, cfg, SPEC, tmp_path / "local", num_workers=2)
    assert summary.resumed == len(problems)
    assert json.loads((tmp_path / "local" / "run.json").read_text())["distributed"]["workers"] == 1


def naming_factory(protocol):
    """Scripted backends whose policy names the API it was asked through, as the HTTP policy does."""

    def build(spec, cfg):
        backends = build_backends(spec, cfg)
        backends.policy.protocol = protocol
        return backends

    return build


def test_ray_run_names_the_protocols_the_workers_used(cluster, problems, tmp_path):
    protocol = "openai /v1/completions (vllm)"
    run_problems_ray(problems[:3], config(), SPEC, tmp_path, num_workers=2, backend_factory=naming_factory(protocol))
    assert json.loads((tmp_path / "run.json").read_text())["protocols"] == {"policy": protocol}
    # a resumed run with nothing left to search still names them (from the workers' start)
    run_problems_ray(problems[:3], config(), SPEC, tmp_path, num_workers=2, backend_factory=naming_factory(protocol))
    assert json.loads((tmp_path / "run.json").read_text())["protocols"] == {"policy": protocol}


def test_failing_problem_surfaces_then_resume_finishes_the_run(cluster, problems, tmp_path):
    cfg = config(num_threads=1)
    bad = problems[-1]  # fed last: at least 4 problems are finished (and recorded) before it starts
    with pytest.raises(ets.SearchError) as info:
        run_problems_ray(problems, cfg, SPEC, tmp_path / "ray", num_workers=2,
                         backend_factory=failing_factory(bad.question))
    message = str(info.value)
    assert f"problem {bad.id}, child 0 of node 0: the reward model returned no score" in message
    assert "worker" in message and "on node 127.0.0.1" in message
    saved = sorted(int(p.stem[1:]) for p in (tmp_path / "ray" / "trees").glob("q*.json"))
    assert bad.id not in saved and len(saved) >= 4
    assert not (tmp_path / "ray" / "answers.json").exists()  # never a half-finished answers file
    assert _all_cpus_free()  # the workers are gone

    # more workers than CPUs (they share them, no hang), fewer than problems; only the rest is searched
    summary = run_problems_ray(problems, cfg, SPEC, tmp_path / "ray", num_workers=3)
    assert summary.resumed == len(saved)
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["distributed"]["workers"] == min(3, 6 - len(saved))
    local_run(problems, cfg, tmp_path / "local")
    same_run(tmp_path / "ray", tmp_path / "local", problems)


def test_unreachable_server_is_reported_by_the_workers(cluster, problems, tmp_path):
    dead = "http://127.0.0.1:9"  # nothing listens there
    spec = BackendSpec(policy_hosts=(dead,), reward_hosts=(dead,), reward_api="ets")
    with pytest.raises(BackendError) as info:
        run_problems_ray(problems[:2], config(), spec, tmp_path, num_workers=2)
    assert "cannot reach the policy server" in str(info.value)
    assert info.value.where.startswith(f"{dead}/v1/models; building the backends, worker ")
    assert " on node 127.0.0.1" in info.value.where
    assert not (tmp_path / "trees").exists()  # stopped before the run directory was touched


def dying_factory(bad_question, flag: Path):
    """Backends whose process dies (once: the flag file says so) on one problem."""

    def build(spec, cfg):
        backends = build_backends(spec, cfg)
        score_fn = backends.reward.score_fn

        def score(question, steps):
            if question == bad_question and not flag.exists():
                flag.write_text("died")
                os._exit(1)  # a crashed worker process, as a lost node looks to the driver
            return score_fn(question, steps)

        backends.reward.score_fn = score
        return backends

    return build


def test_dead_worker_problems_go_to_the_others(cluster, problems, tmp_path):
    cfg = config()
    lines = []
    run_problems_ray(problems, cfg, SPEC, tmp_path / "ray", num_workers=2, progress=lines.append,
                     backend_factory=dying_factory(problems[2].question, tmp_path / "flag"))
    assert (tmp_path / "flag").exists() and any("died" in line for line in lines)
    local_run(problems, cfg, tmp_path / "local")
    same_run(tmp_path / "ray", tmp_path / "local", problems)


def test_missing_ray_names_the_extra(monkeypatch, problems, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayNotInstalled, match=r"pip install 'ets\[ray\]'"):
        run_problems_ray(problems, config(), SPEC, tmp_path, address="auto")


def _all_cpus_free(timeout: float = 10.0) -> bool:
    """The workers (one CPU each) are gone once the cluster's CPUs are all free again."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU"):
            return True
        time.sleep(0.1)
    return False
