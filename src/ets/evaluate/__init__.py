"""Evaluation of search output: answer extraction, grading, best-of-N and
majority vote with the reference's tie rules, and reports over runs.

    from ets.evaluate import load_answers, evaluate_answers
    result = evaluate_answers(load_answers("runs/x/answers.json"), "majority_vote",
                              weighted=True, weight_agg="last", model_type="llemma")
    result.accuracy

math-verify and matplotlib are imported only when grading or plotting.
"""

from ets.evaluate.aggregate import AGG_FUNCS, ALL_SETTINGS, Setting
from ets.evaluate.answers import AnswersFileError, load_answers, validate_answers
from ets.evaluate.evaluator import ProblemResult, Result, evaluate_answers, evaluate_settings
from ets.evaluate.extract import INVALID, extract_answer, extract_boxed, extract_ground_truth
from ets.evaluate.grade import Grader

__all__ = [
    "AGG_FUNCS",
    "ALL_SETTINGS",
    "INVALID",
    "AnswersFileError",
    "Grader",
    "ProblemResult",
    "Result",
    "Setting",
    "evaluate_answers",
    "evaluate_settings",
    "extract_answer",
    "extract_boxed",
    "extract_ground_truth",
    "load_answers",
    "validate_answers",
]
