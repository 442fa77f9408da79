"""ets evaluate: golden accuracies, answer extraction, the reference's tie
rules, grading, answers.json loading and the command line."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from ets.cli import main
from ets.evaluate import (
    INVALID,
    AnswersFileError,
    Grader,
    Setting,
    evaluate_answers,
    evaluate_settings,
    extract_answer,
    extract_boxed,
    extract_ground_truth,
    load_answers,
)
from ets.evaluate.aggregate import (
    ALL_SETTINGS,
    agg_last,
    agg_mean,
    agg_min,
    agg_prod,
    best_of_n,
    majority_vote,
    vote_classes,
)
from ets.evaluate.grade import default_grader

DATA = Path(__file__).parent / "data"
GOLDEN_ANSWERS = DATA / "eval_public.answers.json"
GOLDEN_EXPECTED = DATA / "eval_public.expected.json"


def traj(answer: str | None, scores, fmt: str = "shepherd") -> dict:
    """A trajectory in the math-shepherd format ('The answer is: X ки') or boxed."""
    steps = "".join(f"Step {i + 1}: work. \u043a\u0438\n" for i in range(len(scores) - 1))
    if answer is None:
        final = "I give up. \u043a\u0438"
    elif fmt == "boxed":
        final = f"Therefore, the final answer is: $\\boxed{{{answer}}}$. I hope it is correct."
    else:
        final = f"The answer is: {answer} \u043a\u0438"
    return {"text": "Q?\n" + steps + final, "step_scores": list(scores)}


def problem(gt: str, *trajs, pid=0) -> dict:
    return {"id": pid, "question": "Q?", "model_answer": list(trajs), "ground_truth_answer": gt,
            "total_tokens": 10}


def accuracies(problems, model_type="llemma") -> dict[str, float]:
    return {k: r.accuracy for k, r in evaluate_settings(problems, ALL_SETTINGS, model_type).items()}


# -- golden -----------------------------------------------------------------------

def test_golden_eval_public_every_setting():
    expected = json.loads(GOLDEN_EXPECTED.read_text())
    got = accuracies(load_answers(GOLDEN_ANSWERS))
    assert set(expected) <= set(got)
    for name, acc in expected.items():
        assert got[name] == acc, name  # exactly: the same count of correct problems


def test_golden_through_the_api_and_the_cli(capsys, tmp_path):
    problems = load_answers(GOLDEN_ANSWERS)
    res = evaluate_answers(problems, "majority_vote", weighted=True, weight_agg="last", model_type="llemma")
    assert res.accuracy == 0.36666666666666664 and res.num_correct == 22 and res.total == 60

    out = tmp_path / "results_vote_last.txt"
    # the line of the reference's evaluate.sh, with `ets evaluate` for `python3 ./math_evaluate.py`
    argv = ["evaluate", "--path", str(GOLDEN_ANSWERS), "--agg_func", "majority_vote",
            "--output_path", str(out), "--model_type", "llemma", "--weighted", "True", "--weight_agg", "last"]
    assert main(argv) == 0
    assert "0.36666666666666664" in capsys.readouterr().out
    assert out.read_text() == "\nagg_function majority_vote weighted: True \n accuracy: 0.36666666666666664"
    assert main(argv) == 0  # appends, as the reference does
    capsys.readouterr()
    assert out.read_text().count("accuracy: 0.36666666666666664") == 2

    assert main(["evaluate", "--path", str(GOLDEN_ANSWERS), "--agg_func", "mean", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0.31666666666666665


# -- extraction -----------------------------------------------------------------------

def test_shepherd_extraction_is_the_reference_rule():
    assert extract_answer("Q\nThe answer is: 1,000 \u043a\u0438", "llemma") == "1000"
    assert extract_answer("Q\nThe answer is:  \\frac{1}{2} \u043a\u0438", "mistral") == "\\frac{1}{2}"
    # the reference's regex is greedy on one line and removes every comma
    assert extract_answer("The answer is: (1, 2) \u043a\u0438 and \u043a\u0438", "llemma") == "(1 2) \u043a\u0438 and"
    # without the ' ки' tag, or with none at all, there is no answer
    assert extract_answer("The answer is: 5", "llemma") == INVALID
    assert extract_answer("no answer here \u043a\u0438", "llemma") == INVALID
    assert extract_answer(None, "llemma") == INVALID
    # the first answer line counts
    assert extract_answer("The answer is: 3 \u043a\u0438\nThe answer is: 4 \u043a\u0438", "llemma") == "3"


def test_boxed_extraction_last_box_nested_braces_intact():
    text = (r"First \boxed{1}. Then $\boxed{\frac{1}{\sqrt{2}}}$ and finally "
            r"\boxed{\begin{pmatrix} 1 \\ -\frac{3}{2} \end{pmatrix}} done")
    assert extract_boxed(text) == r"\begin{pmatrix} 1 \\ -\frac{3}{2} \end{pmatrix}"
    assert extract_boxed(r"so \boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert extract_boxed(r"\boxed{x^{2^{3}}+\sqrt{\frac{a}{b}}}") == r"x^{2^{3}}+\sqrt{\frac{a}{b}}"
    assert extract_boxed(r"\boxed{3} then a cut \boxed{\frac{1}{2}") == "3"  # the last one is unfinished
    assert extract_boxed(r"\fbox{7}") == "7"
    assert extract_boxed(r"$\boxed 5$") == "5"
    assert extract_boxed("no box") is None


def test_extraction_by_prompt_format():
    llama = ("## Step 1: Add\n2+2=4\n\nTherefore, the final answer is: $\\boxed{\\frac{3}{4}}$. "
             "I hope it is correct.")
    assert extract_answer(llama, "llama") == "\\frac{3}{4}"
    assert extract_answer("so \\boxed{12}", "qwen") == "12"
    assert extract_answer("Therefore, the final answer is: 12.", "qwen") == "12"  # no box: the answer line
    assert extract_answer("nothing", "qwen") == INVALID
    # raw (answer_is style, no step tag): lenient; thousands separators go, tuples keep their comma
    assert extract_answer("Q\nThe answer is: 1,234.", "raw") == "1234"
    assert extract_answer("Q\nThe answer is: $(1, 2)$", "raw") == "(1, 2)"
    assert extract_answer("Q\nThe answer is: 9 \u043a\u0438", "raw") == "9"
    # an unknown format: The answer is, then boxed
    assert extract_answer("The answer is 8", "some_new_model") == "8"
    assert extract_answer("hence \\boxed{8}", "some_new_model") == "8"


def test_ground_truth_extraction():
    assert extract_ground_truth("Natalia sold 48/2 = 24 clips.\n#### 1,072") == "1072"
    assert extract_ground_truth("\\frac{1}{2}") == "\\frac{1}{2}"
    assert extract_ground_truth(" 18 ") == "18"
    assert extract_ground_truth(42) == "42"
    assert extract_ground_truth(None) is None
    # ASDiv writes the unit after the number
    assert extract_ground_truth("9 (apples)") == "9"
    assert extract_ground_truth("1,200 (dollars)") == "1200"
    assert extract_ground_truth("5 (a); 6 (b)") == "5 (a); 6 (b)"  # several answers: left as they are


def test_asdiv_ground_truth_is_graded_on_its_number():
    p = problem("14 (apples)", traj("Therefore, the final answer is: 14.", [0.5]))
    assert evaluate_answers([p], "last", model_type="small_instruct").accuracy == 1.0


def test_gsm8k_ground_truth_is_graded_on_its_number():
    p = problem("She pays 2 * 500 = 1000 dollars.\n#### 1,000", traj("1000", [0.5]), traj("999", [0.4]))
    assert evaluate_answers([p], "last").accuracy == 1.0


# -- aggregates -----------------------------------------------------------------------

def test_aggregates_follow_the_reference():
    assert agg_min([]) == agg_prod([]) == agg_mean([]) == agg_last([]) == 0
    assert agg_min([0.5, 0.25, 0.75]) == 0.25
    assert agg_min([2.0, 3.0]) == 1  # starts from 1
    assert agg_min([0.5, None, 0.25]) == 0.25
    assert agg_prod([0.5, 0.5]) == 0.25
    assert agg_prod([2.0, 3.0]) == 6.0
    assert agg_mean([0.25, 0.75]) == 0.5
    assert agg_last([0.1, 0.9]) == 0.9
    assert agg_last([0.1, None]) == 0


# -- ties: best-of-N -----------------------------------------------------------------------

def test_best_of_n_keeps_the_first_highest():
    assert best_of_n([0.5, 0.75, 0.75, 0.25]) == 1
    assert best_of_n([]) is None
    wrong_first = problem("7", traj("8", [0.25, 0.5]), traj("7", [0.5, 0.5]))
    right_first = problem("7", traj("7", [0.5, 0.5]), traj("8", [0.25, 0.5]))
    # last: both 0.5, the first wins
    assert evaluate_answers([wrong_first], "last").accuracy == 0.0
    assert evaluate_answers([right_first], "last").accuracy == 1.0
    # min: 0.25 vs 0.5, the second wins
    assert evaluate_answers([wrong_first], "min").accuracy == 1.0
    # no trajectories: wrong
    assert evaluate_answers([problem("7")], "last").accuracy == 0.0


# -- the hand-made run of the report test ---------------------------------------------------

HAND_PROBLEMS = [
    problem("7",
            traj("7", [0.75, 0.25]),   # min .25  prod .1875 mean .5    last .25
            traj("8", [0.5, 0.5]),     # min .5   prod .25   mean .5    last .5
            traj("7", [0.5, 0.125]),   # min .125 prod .0625 mean .3125 last .125
            pid=1),
    problem("\\frac{1}{2}", traj("0.5", [1.0]), traj("3", [0.25]), pid=2),
]
HAND_EXPECTED = {
    "best_of_n/min": 0.5, "best_of_n/prod": 0.5,
    "best_of_n/mean": 1.0,  # mean tie .5/.5 on problem 1: the first (7) wins
    "best_of_n/last": 0.5,
    "majority_vote/unweighted": 1.0,  # problem 2: a 1-1 tie, the first class (0.5) wins
    "majority_vote/weighted/min": 0.5,
    "majority_vote/weighted/prod": 0.5,  # problem 1: 7 reaches .25 after 8 did: 8 keeps it
    "majority_vote/weighted/mean": 1.0,
    "majority_vote/weighted/last": 0.5,
}


def test_hand_made_problems_every_setting():
    assert accuracies(HAND_PROBLEMS) == HAND_EXPECTED


# -- ties: majority vote -----------------------------------------------------------------------

def vote(answers, gt, weights=None, weight_agg="last"):
    """Accuracy (0 or 1) of one problem whose trajectories give `answers`; with
    `weights`, each trajectory's only (hence last) step score is its weight."""
    if weights is None:
        p = problem(gt, *(traj(a, [0.5]) for a in answers))
        return evaluate_answers([p], "majority_vote").accuracy
    p = problem(gt, *(traj(a, [w]) for a, w in zip(answers, weights)))
    return evaluate_answers([p], "majority_vote", weighted=True, weight_agg=weight_agg).accuracy


def test_vote_tie_goes_to_the_class_that_reached_the_total_first():
    assert vote(["3", "4"], "3") == 1.0 and vote(["3", "4"], "4") == 0.0
    # 4 reaches 2 at the third trajectory, 3 only equals it at the fourth
    assert vote(["3", "4", "4", "3"], "4") == 1.0
    assert vote(["3", "4", "4", "3"], "3") == 0.0
    # the plain majority still wins
    assert vote(["3", "4", "4", "3", "3"], "3") == 1.0


def test_vote_classes_use_equivalence_not_string_identity():
    # 1/2 and 0.5 are one class of 2 votes against 3's one
    assert vote(["3", "\\frac{1}{2}", "0.5"], "1/2") == 1.0
    assert vote(["3", "\\frac{1}{2}", "0.5"], "3") == 0.0


def test_weighted_vote_best_total_starts_at_zero():
    # every weight 0: no class rises above 0, no winner, wrong although every answer is right
    assert vote(["5", "5"], "5", weights=[0.0, 0.0]) == 0.0
    # a negative weight first, then enough to rise above 0
    assert vote(["5", "5"], "5", weights=[-0.5, 0.75]) == 1.0
    assert vote(["5", "6"], "5", weights=[-0.5, 0.25]) == 0.0
    # weights by min start from 1: scores above 1 weigh 1
    p = problem("5", traj("6", [0.875]), traj("5", [2.0, 3.0]))
    assert evaluate_answers([p], "majority_vote", weighted=True, weight_agg="min").accuracy == 1.0
    assert evaluate_answers([p], "majority_vote", weighted=True, weight_agg="mean").accuracy == 1.0
    p = problem("5", traj("6", [0.875]), traj("5", [0.5, 3.0]))
    assert evaluate_answers([p], "majority_vote", weighted=True, weight_agg="min").accuracy == 0.0


def test_invalid_is_a_class_and_is_graded_wrong():
    # two unreadable answers outvote the right one
    p = problem("5", traj(None, [0.5]), traj(None, [0.5]), traj("5", [0.5]))
    assert evaluate_answers([p], "majority_vote").accuracy == 0.0
    result = evaluate_answers([p], "majority_vote").problems[0]
    assert result.answer == INVALID and result.votes == [(INVALID, 2.0), ("5", 1.0)]
    # picked by best-of-N, [invalid] is wrong even against a ground truth that reads "[invalid]"
    p = problem("[invalid]", traj(None, [0.9]), traj("5", [0.1]))
    assert evaluate_answers([p], "last").accuracy == 0.0


def reference_vote(answers, weights, equivalent):
    """The reference's majority_vote loop, literally: (winning answer, totals)."""
    max_vote, max_rep = 0, None
    classes, totals = [], []
    for answer, weight in zip(answers, weights):
        flag = 0
        for i, rep in enumerate(classes):
            if equivalent(answer, rep):
                flag = 1
                totals[i] = totals[i] + weight
                if totals[i] > max_vote:
                    max_vote, max_rep = totals[i], answer
        if flag:
            continue
        classes.append(answer)
        totals.append(weight)
        if weight > max_vote:
            max_vote, max_rep = weight, answer
    return max_rep, totals


def test_vote_matches_the_reference_loop_even_for_a_non_transitive_equivalence():
    rng = random.Random(5)
    for trial in range(300):
        labels = [f"a{i}" for i in range(rng.randint(1, 6))]
        # a random symmetric-or-not relation, reflexive like string identity
        rel = {(x, y): (x == y) or rng.random() < 0.3 for x in labels for y in labels}
        equivalent = lambda a, r: rel[(a, r)]  # noqa: E731
        n = rng.randint(0, 12)
        answers = [rng.choice(labels) for _ in range(n)]
        weights = [rng.choice([0, 1, 0.25, 0.5, -0.25, 0.75]) for _ in range(n)]
        want_answer, want_totals = reference_vote(answers, weights, equivalent)
        reps, routes = vote_classes(answers, equivalent)
        picked, totals = majority_vote(weights, routes, len(reps))
        got_answer = answers[picked] if picked is not None else None
        assert got_answer == want_answer, (answers, weights)
        assert totals == want_totals


# -- grading ---------------------------------------------------------------------------------------

NUMBERS = ["29", "29.0", "029", "-3", "-3.0", "1/3", "\\frac{1}{3}", "0.333333", "0.3333333", "0.33", "2.5",
           "5/2", "\\frac{5}{2}", "0.5", "\\frac12", "100", "100.000001", "100.00001", "0.1", "\\frac{1}{10}"]


def grader_agreeing_with_math_verify(answers):
    """A Grader that has compared every ordered pair of ``answers``, each verdict checked
    against math-verify's own."""
    from math_verify import parse, verify

    grader = Grader()
    parsed = {s: parse("\\boxed{" + s + "}") for s in answers}
    for given in answers:
        for ref in answers:
            want = given == ref or verify(parsed[ref], parsed[given])
            assert grader.equivalent(given, ref) == want, (given, ref)
    return grader


def test_fast_paths_agree_with_math_verify():
    grader = grader_agreeing_with_math_verify(NUMBERS)
    assert grader.counts["verify_calls"] < len(NUMBERS) ** 2 / 4  # most pairs never reach verify


EXPRESSIONS = ["2\\pi", "6.283185", "6.28", "3\\sqrt{5}", "\\sqrt{45}", "\\frac{1}{\\sqrt{3}}", "9\\%", "9", "x=9",
               "\\{9\\}"]


def test_numeric_value_fast_path_agrees_with_math_verify():
    grader = grader_agreeing_with_math_verify(EXPRESSIONS)
    # 3 sqrt(5) = sqrt(45), 2 pi ~ 6.283185 (6 places), 9% = 9 (math-verify's rule), x=9 and 9
    assert grader.equivalent("\\sqrt{45}", "3\\sqrt{5}") and grader.equivalent("6.283185", "2\\pi")
    assert grader.equivalent("9\\%", "9") and grader.equivalent("9", "x=9")
    assert not grader.equivalent("6.28", "2\\pi")
    # verify is called only for the 48 ordered pairs with a non-number (9%, x=9, {9}) and the 4 close ones
    assert grader.counts["verify_calls"] <= 52


def test_grader_caches_parses_and_pairs():
    grader = Grader()
    for _ in range(3):
        assert grader.equivalent("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}")
        assert not grader.equivalent("\\sqrt{2}", "\\frac{1}{\\sqrt{3}}")
    assert grader.counts["parses"] == 3
    assert grader.counts["verify_calls"] == 1  # sqrt(2) vs 1/sqrt(3): apart by value, no verify
    assert grader.counts["cache_hits"] == 4


def test_grader_outside_the_main_thread():
    grader = Grader()
    results = []
    errors = []

    def work():
        try:
            results.append(grader.equivalent("\\frac{2}{\\sqrt{12}}", "\\frac{\\sqrt{3}}{3}"))
            results.append(grader.equivalent("x^2+2x+1", "(x+1)^2"))
            results.append(grader.equivalent("(x+1)^2", "x^2+1"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert not errors and results == [True, True, False]


def test_boxed_answers_graded_by_math_verify():
    problems = [
        problem("\\frac{\\sqrt{3}}{3}", traj("\\frac{1}{\\sqrt{3}}", [0.9], "boxed"), traj("3", [0.1], "boxed"), pid=1),
        problem("(-\\infty, 2) \\cup (3, \\infty)", traj("(-\\infty,2)\\cup(3,\\infty)", [0.9], "boxed"), pid=2),
        problem("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
                traj("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", [0.2], "boxed"),
                traj("\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", [0.9], "boxed"), pid=3),
    ]
    res = evaluate_answers(problems, "last", model_type="llama")
    assert [p.correct for p in res.problems] == [True, True, False]
    assert res.problems[2].answer == "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"


# -- answers.json --------------------------------------------------------------------------------------

def test_our_answers_json_with_steps_and_extra_keys_loads(tmp_path):
    ours = [{"id": "p1", "question": "Q?", "ground_truth_answer": "7", "total_tokens": 12,
             "model_answer": [{"text": "Q?\nThe answer is: 7 \u043a\u0438", "step_scores": [0.5],
                               "steps": ["The answer is: 7 \u043a\u0438"], "tokens": 5}],
             "extra": {"anything": 1}}]
    path = tmp_path / "run"
    path.mkdir()
    (path / "answers.json").write_text(json.dumps(ours, ensure_ascii=False))
    assert load_answers(path)[0]["id"] == "p1"  # a run directory stands for its answers.json
    assert evaluate_answers(load_answers(path / "answers.json"), "last").accuracy == 1.0


@pytest.mark.parametrize("content, message", [
    ('{"model_answer": []}', "expected a JSON list of problems, got dict"),
    ('[{"id": 3, "ground_truth_answer": "1"}]', "problem 0 (id 3): missing key 'model_answer'"),
    ('[{"model_answer": [{"text": "x"}], "ground_truth_answer": "1"}]', "'step_scores' should be a list"),
    ('[{"model_answer": {"text": "x"}, "ground_truth_answer": "1"}]', "'model_answer' should be a list"),
    ('[{"model_answer": [{"text": "x", "step_scores": ["a"]}], "ground_truth_answer": "1"}]', "not a number"),
    ("[{", "not valid JSON"),
])
def test_malformed_answers_name_the_path_and_the_problem(tmp_path, content, message):
    path = tmp_path / "answers.json"
    path.write_text(content)
    with pytest.raises(AnswersFileError) as info:
        load_answers(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_answers_file(tmp_path, capsys):
    missing = tmp_path / "nope" / "answers.json"
    with pytest.raises(AnswersFileError, match="no such file"):
        load_answers(missing)
    assert main(["evaluate", "--path", str(missing), "--agg_func", "last"]) == 2
    assert str(missing) in capsys.readouterr().err


# -- command line ------------------------------------------------------------------------------------------

@pytest.fixture
def hand_file(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(HAND_PROBLEMS, ensure_ascii=False))
    return path


def cli_json(capsys, *argv) -> dict:
    assert main(["evaluate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_settings(hand_file, capsys):
    p = str(hand_file)
    assert cli_json(capsys, "--path", p, "--agg_func", "prod")["accuracy"] == 0.5
    assert cli_json(capsys, "--path", p, "--agg_func", "mean")["accuracy"] == 1.0
    # weighted by prod: 0.5; '--weighted False' is a plain vote: 1.0
    out = cli_json(capsys, "--path", p, "--agg_func", "majority_vote", "--weighted", "True", "--weight_agg", "prod")
    assert out["accuracy"] == 0.5 and out["weighted"] is True and out["setting"] == "majority_vote/weighted/prod"
    assert cli_json(capsys, "--path", p, "--agg_func", "majority_vote", "--weighted", "False",
                    "--weight_agg", "prod")["accuracy"] == 1.0
    # --weighted is ignored by best-of-N, as in the reference
    assert cli_json(capsys, "--path", p, "--agg_func", "last", "--weighted", "True")["accuracy"] == 0.5
    every = cli_json(capsys, "--path", p, "--all")
    assert every["accuracy"] == HAND_EXPECTED and every["total"] == 2


def test_cli_per_problem(hand_file, capsys):
    out = cli_json(capsys, "--path", str(hand_file), "--agg_func", "majority_vote", "--weighted", "true",
                   "--weight_agg", "prod", "--per_problem")
    first = out["problems"][0]
    assert first["answer"] == "8" and first["correct"] is False and first["picked"] == 1
    assert first["votes"] == [["7", 0.25], ["8", 0.25]]


def test_cli_argument_errors(hand_file, capsys):
    p = str(hand_file)
    assert main(["evaluate", "--path", p, "--agg_func", "majority_vote", "--weighted", "True"]) == 2
    assert "--weight_agg" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "give a run directory or answers.json" in capsys.readouterr().err
    assert main(["evaluate", p, "--path", p + "x"]) == 2
    assert "two paths" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--path", p, "--agg_func", "majority_vote", "--weighted", "maybe"])
    with pytest.raises(SystemExit):
        main(["evaluate", "--path", p, "--agg_func", "median"])


def test_cli_plain_path_gives_every_setting(hand_file, capsys):
    """`ets evaluate DIR` with no setting named: every setting, labelled, the figures --all gives."""
    p = str(hand_file)
    every = cli_json(capsys, "--path", p, "--all")["accuracy"]
    assert main(["evaluate", p]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == list(every)
    assert [float(line.split(": ")[1].split()[0]) for line in lines] == list(every.values())
    assert cli_json(capsys, p)["accuracy"] == every


def test_setting_names_round_trip():
    for s in ALL_SETTINGS:
        assert Setting.from_name(s.name) == s
    with pytest.raises(ValueError):
        Setting("majority_vote", True, None)


def test_shared_grader_makes_a_second_pass_cheap():
    grader = default_grader()
    problems = load_answers(GOLDEN_ANSWERS)
    evaluate_settings(problems, ALL_SETTINGS, "llemma", grader)
    before = dict(grader.counts)
    evaluate_settings(problems, ALL_SETTINGS, "llemma", grader)
    assert grader.counts["parses"] == before.get("parses", 0)
    assert grader.counts["verify_calls"] == before.get("verify_calls", 0)


def test_cli_reads_the_runs_prompt_format_from_run_json(tmp_path, capsys):
    # an `ets run` directory of the CPU default: answers in small_instruct's "final answer is" style
    run = tmp_path / "run"
    run.mkdir()
    final_line = {"text": "7 + 7 = 14 apples.\nTherefore, the final answer is: 14.", "step_scores": [0.5, 0.5]}
    answers = [problem("14 (apples)", final_line)]
    (run / "answers.json").write_text(json.dumps(answers))
    (run / "run.json").write_text(json.dumps({"config": {"prompt_format": "small_instruct"}}))
    assert cli_json(capsys, "--path", str(run), "--agg_func", "last")["accuracy"] == 1.0
    # given explicitly, --model_type wins (llemma reads only "The answer is: X")
    assert cli_json(capsys, "--path", str(run / "answers.json"), "--agg_func", "last",
                    "--model_type", "llemma")["accuracy"] == 0.0
    # no run.json (a reference run): llemma, as the reference's math_evaluate.py
    (run / "run.json").unlink()
    assert cli_json(capsys, "--path", str(run), "--agg_func", "last")["accuracy"] == 0.0
    # a damaged run.json is named, not silently read as llemma
    (run / "run.json").write_text("{not json")
    assert main(["evaluate", "--path", str(run), "--agg_func", "last"]) == 2
    err = capsys.readouterr().err
    assert str(run / "run.json") in err and "--model_type" in err
