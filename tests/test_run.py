"""The runner and `ets run`: files, sweeps, resume, and refusing bad input early."""

import asyncio
import json
import re
from pathlib import Path

import pytest

import ets
from ets.backends.scripted import ScriptedPolicy, ScriptedReward, toy_world
from ets.cli import main
from ets.datasets import DatasetError, load_problems
from ets.backends.base import Backends
from ets.runner import RunDirError, run_problems

GSM8K = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gsm8k_and_math500_fields(tmp_path):
    gsm = load_problems(str(GSM8K), num_samples=2)
    assert gsm[0].question.startswith("Janet") and gsm[0].answer.endswith("#### 18")
    math = write_lines(tmp_path / "m.jsonl", [json.dumps({"problem": "1+1?", "answer": "2", "solution": "..."})])
    assert load_problems(str(math))[0].answer == "2"


def test_bad_line_is_refused_with_file_and_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"question": "a", "answer": "1"}', "{not json"])
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: not valid JSON"):
        load_problems(str(path))
    path = write_lines(tmp_path / "e.jsonl", ['{"question": "a"}', '{"prompt": "b"}'])
    with pytest.raises(DatasetError, match=r"e\.jsonl:2: no problem text.*'problem'.*'question'.*found fields \['prompt'\]"):
        load_problems(str(path))


def test_cli_refuses_bad_dataset_before_loading_models(tmp_path, capsys):
    path = write_lines(tmp_path / "d.jsonl", ['{"question": "a"}', "[1, 2"])
    code = main(["run", "--input_path", str(path), "--output_path", str(tmp_path / "out/answers.json"), "--scripted"])
    assert code == 2
    assert "d.jsonl:2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_misspelled_override(tmp_path, capsys):
    code = main(["run", "--input_path", str(GSM8K), "--output_path", str(tmp_path / "a.json"), "--scripted",
                 "--set", "softmax_temp=0.5"])
    assert code == 2
    assert "did you mean 'softmax_temperature'" in capsys.readouterr().err


def test_width_sweep_writes_reference_files(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["run", "--input_path", str(GSM8K), "--output_path", str(out / "answers.json"), "--num_samples", "2",
                 "--scripted", "--width", "2", "4", "--select_method", "softmax", "--quiet"])
    assert code == 0
    for width in (2, 4):
        run_dir = out / f"width_{width}"
        answers = json.loads((run_dir / "answers.json").read_text())
        assert [a["id"] for a in answers] == [0, 1]
        assert set(answers[0]) == {"id", "question", "model_answer", "ground_truth_answer", "total_tokens"}
        assert answers[0]["ground_truth_answer"].endswith("#### 18")
        for trajectory in answers[0]["model_answer"]:
            assert len(trajectory["step_scores"]) == len(trajectory["steps"]) >= 1
            assert "The answer is" in trajectory["steps"][-1]
        log = (run_dir / "stats.log").read_text().splitlines()
        assert [line.split(":")[0] for line in log] == [
            "Total KV cache size", "Number of Model Calls", "Number of Tokens Generated", "Time"]
        run = json.loads((run_dir / "run.json").read_text())
        assert run["config"]["width"] == width and run["config"]["select_method"] == "softmax"
        assert int(log[1].split(": ")[1]) == run["stats"]["model_calls"]
        assert sum(a["total_tokens"] for a in answers) == run["stats"]["tokens_generated"] == int(log[2].split(": ")[1])
        tree = json.loads((run_dir / "trees" / "q0.json").read_text())
        assert tree["nodes"][0]["parent_id"] is None and tree["nodes"][0]["depth"] == 0
        leaves = [n for n in tree["nodes"] if n["leaf"]]
        assert len(leaves) == len(answers[0]["model_answer"])
    # at most `width` trajectories finish per problem under softmax allocation
    assert all(len(a["model_answer"]) <= 4 for a in json.loads((out / "width_4" / "answers.json").read_text()))


def test_interrupted_run_resumes_without_searching_finished_problems(tmp_path):
    problems = load_problems(str(GSM8K), num_samples=3)
    policy, reward = toy_world()
    config = ets.SearchConfig(width=3, select_method="softmax", prompt_format="raw", num_threads=1)

    failing = {"on": True}

    def score_fn(question, steps):
        if failing["on"] and question == problems[2].question:
            return None  # the PRM breaks on the third problem
        return reward.score_fn(question, steps)

    backends = Backends(policy, ScriptedReward(score_fn), description={"policy": "toy"})
    with pytest.raises(ets.SearchError, match=r"problem 2, child 0 of node 0: the reward model returned no score"):
        asyncio.run(run_problems(problems, config, backends, tmp_path))
    assert sorted(p.name for p in (tmp_path / "trees").iterdir()) == ["q0.json", "q1.json"]
    assert not (tmp_path / "answers.json").exists()  # never a half-finished answers file

    failing["on"] = False
    before = policy.requests
    summary = asyncio.run(run_problems(problems, config, backends, tmp_path))
    assert summary.resumed == 2
    fresh = asyncio.run(ets.search(problems[2].question, config, policy=policy, reward=reward))
    # only the third problem was searched again (twice now: resumed run + the fresh reference search)
    assert policy.requests - before == 2 * fresh.stats.expansions
    assert len(json.loads((tmp_path / "answers.json").read_text())) == 3

    # a changed setting is another run: refused, naming the setting, unless started afresh
    with pytest.raises(RunDirError, match=r"holds another run: other settings: softmax_temperature 0\.2 then, 0\.5 now"):
        asyncio.run(run_problems(problems, config.replace(softmax_temperature=0.5), backends, tmp_path))
    summary = asyncio.run(run_problems(problems, config.replace(softmax_temperature=0.5), backends, tmp_path,
                                       resume=False))
    assert summary.resumed == 0

    # a run written before a config key existed (here policy_model) resumes while the key keeps its default,
    # and is another run once it does not
    for path in [tmp_path / "run.json", *(tmp_path / "trees").iterdir()]:
        saved = json.loads(path.read_text())
        del (saved["fingerprint"] if "fingerprint" in saved else saved)["config"]["policy_model"]
        path.write_text(json.dumps(saved))
    assert asyncio.run(run_problems(problems, config.replace(softmax_temperature=0.5), backends, tmp_path)).resumed == 3
    with pytest.raises(RunDirError, match=r"other settings: policy_model None then, 'other.gguf' now"):
        asyncio.run(run_problems(problems, config.replace(softmax_temperature=0.5, policy_model="other.gguf"),
                                 backends, tmp_path))

    # other backends: their checkpoints are dropped, and the resume says so
    said = []
    other = Backends(policy, reward, description={"policy": "toy 2"})
    summary = asyncio.run(run_problems(problems, config.replace(softmax_temperature=0.5), other, tmp_path,
                                       progress=said.append))
    assert summary.resumed == 0 and summary.dropped == 3
    assert said[0].endswith("0 of 3 problems taken from checkpoints, 3 dropped and searched again: q0.json, q1.json, "
                            "q2.json (searched with other backends: policy 'toy' then, 'toy 2' now)")


def test_public_api_search_returns_answers_and_stats():
    policy = ScriptedPolicy(
        step_fn=lambda q, steps, k: f"step {len(steps)}.{k}" + (" The answer is: 4\n" if len(steps) == 1 else "\n"),
        token_fn=lambda text: len(text.split()),
    )
    reward = ScriptedReward(score_fn=lambda q, steps: 0.5 + 0.1 * len(steps))
    config = ets.SearchConfig(width=2, select_method="softmax", prompt_format="raw")
    result = asyncio.run(ets.search("2+2?", config, policy=policy, reward=reward))
    # root -> 2 children (width 2, the root gets both), each -> 1 child that answers; the tie
    # between the two children is expanded later-first (the reference's sort), so ids follow that
    assert [a["steps"] for a in result.answers] == [["step 0.1\n", "step 1.0 The answer is: 4\n"],
                                                    ["step 0.0\n", "step 1.0 The answer is: 4\n"]]
    assert [a["step_scores"] for a in result.answers] == [[0.6, 0.7], [0.6, 0.7]]
    assert result.stats.model_calls == 4
    assert result.stats.tokens_generated == 2 * 2 + 2 * 6
    # KV: depth 0 -> root (1 token); depth 1 -> root + two 2-token children
    assert result.stats.kv_cache_size == 1 + (1 + 2 + 2)


def test_rerun_keeps_the_runs_time_and_a_failed_rerun_leaves_no_stale_answers(tmp_path):
    problems = load_problems(str(GSM8K), num_samples=2)
    policy, reward = toy_world()
    config = ets.SearchConfig(width=3, select_method="softmax", prompt_format="raw")
    backends = Backends(policy, reward, description={"policy": "toy"})
    first = asyncio.run(run_problems(problems, config, backends, tmp_path))
    searched_until = max(json.loads(p.read_text())["run_elapsed"] for p in (tmp_path / "trees").iterdir())
    assert 0 < searched_until <= first.stats.time
    again = asyncio.run(run_problems(problems, config, backends, tmp_path))  # everything resumed
    # the time is the run's, not the near-zero of an invocation that searched nothing
    assert again.resumed == 2 and again.stats.time >= searched_until
    assert float((tmp_path / "stats.log").read_text().splitlines()[3].split(": ")[1]) == again.stats.time

    broken = Backends(policy, ScriptedReward(lambda q, steps: None), description={"policy": "toy"})
    with pytest.raises(ets.SearchError):
        asyncio.run(run_problems(problems, config.replace(lambdac=2.0), broken, tmp_path, resume=False))
    # the earlier run's final files no longer describe what is in the directory: gone
    assert not any((tmp_path / name).exists() for name in ("answers.json", "stats.log", "run.json"))


@pytest.mark.parametrize("bad", [None, float("nan")])
def test_a_missing_or_nan_score_names_problem_and_node(bad):
    policy, reward = toy_world()
    config = ets.SearchConfig(width=2, select_method="softmax", prompt_format="raw")
    broken = ScriptedReward(lambda q, steps: bad if len(steps) == 2 else reward.score_fn(q, steps))
    with pytest.raises(ets.SearchError, match=r"problem 7, child 0 of node \d+: the reward model returned (no|nan) score"):
        asyncio.run(ets.search("q", config, policy=policy, reward=broken, problem_id=7))


def test_output_path_may_name_the_run_directory(tmp_path):
    code = main(["run", "--input_path", str(GSM8K), "--output_path", str(tmp_path / "run"), "--num_samples", "1",
                 "--scripted", "--width", "2", "--quiet"])
    assert code == 0
    assert (tmp_path / "run" / "answers.json").is_file() and (tmp_path / "run" / "stats.log").is_file()


def test_tree_refuses_a_second_root():
    with pytest.raises(ValueError, match="node 1: a second root"):
        ets.Tree.from_nodes([{"id": 0, "parent_id": None, "text": "a", "score": 1, "depth": 0, "num_step_tokens": 1},
                             {"id": 1, "parent_id": None, "text": "b", "score": 1, "depth": 0, "num_step_tokens": 1}])


def test_a_slice_of_a_dataset_keeps_the_problems_ids(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"question": f"q{i}", "answer": str(i)}) for i in range(10)])
    picked = load_problems(f"{path}[1::4]")
    assert [(p.id, p.question, p.answer) for p in picked] == [(1, "q1", "1"), (5, "q5", "5"), (9, "q9", "9")]
    assert [p.id for p in load_problems(f"{path}[-3:]", num_samples=2)] == [7, 8]
    with pytest.raises(DatasetError, match="slice step must be at least 1"):
        load_problems(f"{path}[::0]")


def test_a_sweep_over_a_key_runs_each_value_in_its_own_directory(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["run", "--input_path", str(GSM8K), "--output_path", str(out), "--num_samples", "2", "--scripted",
                 "--sweep", "lambdas=0,1.5", "--width", "2", "4", "--quiet"])
    assert code == 0, capsys.readouterr().err
    dirs = sorted(p.name for p in out.iterdir())
    assert dirs == ["lambdas=0,width=2", "lambdas=0,width=4", "lambdas=1.5,width=2", "lambdas=1.5,width=4"]
    for name in dirs:
        config = json.loads((out / name / "run.json").read_text())["config"]
        lambdas, width = (part.split("=")[1] for part in name.split(","))
        assert (config["lambdas"], config["width"]) == (float(lambdas), int(width))
        assert len(json.loads((out / name / "answers.json").read_text())) == 2
    # the same command again resumes every run; one value alone writes OUTPUT/KEY=V
    assert main(["run", "--input_path", str(GSM8K), "--output_path", str(out), "--num_samples", "2", "--scripted",
                 "--sweep", "lambdas=0,1.5", "--width", "2", "4", "--quiet"]) == 0
    assert main(["run", "--input_path", str(GSM8K), "--output_path", str(tmp_path / "one"), "--num_samples", "1",
                 "--scripted", "--sweep", "lambdac=2", "--quiet"]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["lambdac=2"]


@pytest.mark.parametrize("sweep, message", [
    ("width=2,4", r"--sweep width: not a key a sweep can vary \(use --width"),
    ("policy_model=a,b", r"--sweep policy_model: not a key a sweep can vary"),
    ("lambdac=1,-1", r"--sweep lambdac: lambdac: must be >= 0.0, got -1"),
    ("lambdac=1,1", r"a value is given twice"),
    ("lambdac", r"expected KEY=V1,V2"),
    ("lambdac=1,", r"expected KEY=V1,V2"),
    ("lamdac=1,2", r"unknown key 'lamdac'; did you mean 'lambdac'"),
])
def test_a_bad_sweep_is_refused_before_any_work(tmp_path, capsys, sweep, message):
    code = main(["run", "--input_path", str(GSM8K), "--output_path", str(tmp_path / "s"), "--scripted",
                 "--sweep", sweep])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "s").exists()
