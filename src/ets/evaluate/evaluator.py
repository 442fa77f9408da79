"""Accuracy of an ``answers.json`` under best-of-N and (weighted) majority vote."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ets.evaluate.aggregate import (
    ALL_SETTINGS,
    Setting,
    best_of_n,
    get_agg,
    majority_vote,
    vote_classes,
)
from ets.evaluate.extract import INVALID, extract_answer, extract_ground_truth
from ets.evaluate.grade import Grader, default_grader


@dataclass
class ProblemResult:
    id: object
    ground_truth: str | None
    answer: str | None  # the picked answer; None when nothing was picked
    correct: bool
    picked: int | None  # index of the trajectory whose answer was picked
    votes: list[tuple[str, float]] | None = None  # (class representative, total), majority vote only


@dataclass
class Result:
    setting: Setting
    model_type: str
    num_correct: int
    total: int
    problems: list[ProblemResult] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.num_correct * 1.0 / self.total if self.total else 0.0

    def to_dict(self, per_problem: bool = False) -> dict:
        out = {
            "accuracy": self.accuracy,
            "num_correct": self.num_correct,
            "total": self.total,
            "setting": self.setting.name,
            "agg_func": self.setting.agg_func,
            "weighted": self.setting.weighted,
            "weight_agg": self.setting.weight_agg,
            "model_type": self.model_type,
        }
        if per_problem:
            out["problems"] = [
                {"id": p.id, "ground_truth": p.ground_truth, "answer": p.answer,
                 "correct": p.correct, "picked": p.picked,
                 **({"votes": p.votes} if p.votes is not None else {})}
                for p in self.problems
            ]
        return out


class _Problem:
    """One problem's extracted answers, with its vote classes computed on demand."""

    def __init__(self, problem: dict, model_type: str, grader: Grader):
        self.id = problem.get("id")
        self.ground_truth = extract_ground_truth(problem.get("ground_truth_answer"))
        self.candidates = problem["model_answer"]
        self.answers = [extract_answer(c.get("text"), model_type) for c in self.candidates]
        self.grader = grader
        self._classes = None

    def classes(self):
        if self._classes is None:
            self._classes = vote_classes(self.answers, self.grader.equivalent)
        return self._classes

    def correct(self, answer: str | None) -> bool:
        return self.grader.is_correct(answer, self.ground_truth)

    def decide(self, setting: Setting) -> ProblemResult:
        if not setting.is_vote:
            agg = get_agg(setting.agg_func)
            picked = best_of_n([agg(c["step_scores"]) for c in self.candidates])
            # the reference extracts from no text at all when nothing is picked
            answer = self.answers[picked] if picked is not None else INVALID
            return ProblemResult(self.id, self.ground_truth, answer, self.correct(answer), picked)
        if setting.weighted:
            agg = get_agg(setting.weight_agg)
            weights = [agg(c["step_scores"]) for c in self.candidates]
        else:
            weights = [1] * len(self.candidates)
        reps, routes = self.classes()
        picked, totals = majority_vote(weights, routes, len(reps))
        answer = self.answers[picked] if picked is not None else None
        return ProblemResult(self.id, self.ground_truth, answer, self.correct(answer), picked,
                             votes=list(zip(reps, totals)))


def evaluate_settings(
    problems: Sequence[dict],
    settings: Iterable[Setting | str] = ALL_SETTINGS,
    model_type: str = "llemma",
    grader: Grader | None = None,
) -> dict[str, Result]:
    """Accuracy under several settings at once (answers are extracted and
    vote classes formed once per problem). Keys are setting names such as
    ``best_of_n/last`` or ``majority_vote/weighted/last``."""
    grader = grader or default_grader()
    settings = [s if isinstance(s, Setting) else Setting.from_name(s) for s in settings]
    if not problems:
        raise ValueError("no problems to evaluate")
    prepared = [_Problem(p, model_type, grader) for p in problems]
    results = {}
    for setting in settings:
        decided = [p.decide(setting) for p in prepared]
        results[setting.name] = Result(setting, model_type, sum(d.correct for d in decided),
                                       len(decided), decided)
    return results


def evaluate_answers(
    problems: Sequence[dict],
    agg_func: str = "majority_vote",
    weighted: bool = False,
    weight_agg: str | None = None,
    model_type: str = "llemma",
    grader: Grader | None = None,
) -> Result:
    """Accuracy of ``problems`` (the list in an ``answers.json``) as the
    reference's ``math_evaluate.py`` computes it with the same arguments."""
    setting = Setting(agg_func, bool(weighted) if agg_func == "majority_vote" else False,
                      weight_agg if agg_func == "majority_vote" and weighted else None)
    return evaluate_settings(problems, [setting], model_type, grader)[setting.name]
