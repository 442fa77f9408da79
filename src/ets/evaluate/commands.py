"""``ets evaluate`` and ``ets report``.

``ets evaluate`` takes the arguments of the reference's ``math_evaluate.py``,
so its published ``evaluate.sh`` runs with ``ets evaluate`` in its place.

A run file that cannot be read or used is refused in one line naming it (exit 2), as is an output
path that is one of the files read or a run's own file; a file that cannot be written fails naming it
(exit 1) and leaves the earlier file whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ets.cli import CommandError
from ets.evaluate.aggregate import AGG_NAMES, ALL_SETTINGS, SELECT_NAMES, Setting
from ets.evaluate.answers import RunFileError, ground_truth_gaps, load_answers, resolve_answers_path
from ets.evaluate.evaluator import evaluate_settings
from ets.evaluate.extract import answer_style
from ets.evaluate.report import build_report, render_brief
from ets.evaluate.runs import check_output, model_type_of, os_error, read_run_json
from ets.files import write_atomic

_TRUE = {"true", "1", "yes", "y", "t", "on"}
_FALSE = {"false", "0", "no", "n", "f", "off", "none"}


def parse_bool(value: str) -> bool:
    """``True``/``False`` (any case, also 1/0, yes/no). Unlike the reference,
    whose ``type=bool`` reads the string ``False`` as true, ``False`` means false."""
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="accuracy of an answers.json (best-of-N or majority vote), as the reference's math_evaluate.py",
        description=(
            "Accuracy of an answers.json under best-of-N (--agg_func min|prod|mean|last) or majority vote "
            "(--agg_func majority_vote, weighted by --weight_agg when --weighted True). The arguments are "
            "those of the reference's math_evaluate.py; ties are broken as it breaks them."
        ),
    )
    p.add_argument("run", nargs="?", metavar="PATH", help="answers.json, or a run directory holding one")
    p.add_argument("--path", help="the same as PATH (the reference's spelling)")
    p.add_argument("--agg_func", choices=SELECT_NAMES,
                   help="best-of-N by this aggregate of the step scores, or majority_vote "
                        "(without it: every setting, as --all)")
    p.add_argument("--weighted", type=parse_bool, default=False, metavar="{True,False}",
                   help="weight each vote by the --weight_agg aggregate of its step scores (majority_vote only)")
    p.add_argument("--weight_agg", choices=AGG_NAMES, help="aggregate used as the vote weight")
    p.add_argument("--model_type", default=None,
                   help="prompt format of the answers: llemma / mistral (The answer is: X ки, the reference's "
                        "rule), llama / qwen (\\boxed{X}), small_instruct, raw, ... (default: the prompt_format in "
                        "the run.json beside the answers, as `ets run` writes it; else llemma, as the reference)")
    p.add_argument("--output_path", help="append the result to this text file, as the reference does")
    p.add_argument("--all", action="store_true",
                   help="report every setting (best-of-N by each aggregate, unweighted and weighted votes)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (its 'accuracy' field is the figure; with --all, 'accuracy' "
                        "maps each setting to its figure)")
    p.add_argument("--per_problem", action="store_true",
                   help="with --json, list each problem's picked answer and verdict")
    p.set_defaults(func=run_evaluate)

    r = subparsers.add_parser(
        "report",
        help="table and plots of accuracy and cost over runs (methods x widths)",
        description=(
            "For run directories (or sweep directories holding width_* runs): one table, Markdown and CSV, of "
            "accuracy under best-of-N and (weighted) majority vote for each aggregate, with KV-cache size, prefix "
            "tokens reused, tokens generated, model calls and time; and plots of accuracy against width, KV-cache "
            "size and tokens generated, one line per method."
        ),
    )
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or sweep directories")
    r.add_argument("--output", "-o", default="report", help="directory to write the report into (default: report)")
    r.add_argument("--model_type", default=None,
                   help="prompt format of the answers (default: each run's prompt_format from run.json, else llemma)")
    r.add_argument("--metric", default="majority_vote/weighted/last",
                   choices=[s.name for s in ALL_SETTINGS],
                   help="the accuracy the plots show (default: majority_vote/weighted/last)")
    r.add_argument("--json", action="store_true", help="print the table rows as JSON")
    r.add_argument("--brief", action="store_true",
                   help="print only each run's accuracy with its interval and its difference to the first run "
                        "named (the files are written in full)")
    r.set_defaults(func=run_report)


@contextmanager
def reading_runs() -> Iterator[None]:
    """A run file that cannot be read or used, or a file operation that fails, as the one line of a
    :class:`CommandError` naming the file."""
    try:
        yield
    except RunFileError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(*os_error(exc)) from exc


def check_output_path(path: str, answers: Path) -> None:
    """The file --output_path appends to must be creatable, and neither the answers read nor a run's own
    file: refused before any work."""
    target = Path(path)
    check_output(target, "--output_path", [answers])
    if target.is_dir():
        raise CommandError(f"--output_path {target} is a directory; give a file to append the result to")
    if not target.parent.is_dir():
        raise CommandError(f"--output_path {target}: the directory {target.parent} does not exist; create it "
                           "or choose another path")


def run_evaluate(args) -> int:
    with reading_runs():
        return _evaluate(args)


def _evaluate(args) -> int:
    if args.run is not None and args.path is not None and args.run != args.path:
        raise CommandError(f"two paths to evaluate: {args.run} and --path {args.path}; give one")
    args.path = args.path or args.run
    if args.path is None:
        raise CommandError("which answers? give a run directory or answers.json: ets evaluate runs/NAME")
    answers = resolve_answers_path(args.path)
    if args.model_type is None:  # the format of the run that wrote the answers
        try:
            config = read_run_json(answers.parent).get("config")
        except RunFileError as exc:
            raise CommandError(f"{exc}; give --model_type to evaluate without it") from exc
        args.model_type = model_type_of(config or {})
    args.all = args.all or args.agg_func is None  # no setting named: every one, each labelled
    if args.all:
        settings = list(ALL_SETTINGS)
    else:
        weighted = args.weighted and args.agg_func == "majority_vote"
        if weighted and args.weight_agg is None:
            raise CommandError("--weighted True needs --weight_agg (min, prod, mean or last)")
        settings = [Setting(args.agg_func, weighted, args.weight_agg if weighted else None)]
    if args.output_path:
        check_output_path(args.output_path, answers)
    if answer_style(args.model_type) == "auto":
        print(f"ets evaluate: warning: unknown --model_type {args.model_type!r}; reading 'The answer is: X', "
              "then \\boxed{X}", file=sys.stderr)
    problems = load_answers(answers)
    gaps = ground_truth_gaps(problems, answers)
    if gaps:
        print(f"ets evaluate: warning: {gaps}", file=sys.stderr)
    try:
        results = evaluate_settings(problems, settings, args.model_type)
    except ValueError as exc:  # no problems
        raise CommandError(f"{answers}: {exc}") from exc

    if args.output_path:
        lines = "".join(  # the reference's lines
            f"\nagg_function {setting.agg_func} weighted: {setting.weighted if args.all else args.weighted} \n"
            f" accuracy: {str(results[setting.name].accuracy)}" for setting in settings)
        target = Path(args.output_path)
        try:  # appended by writing the whole aside: a full disk leaves the file as it was, not cut short
            write_atomic(target, (target.read_bytes() if target.exists() else b"") + lines.encode("utf-8"))
        except OSError as exc:
            raise CommandError(f"cannot append to --output_path {args.output_path}: {exc.strerror}", 1) from exc
    if args.json:
        if args.all:
            out = {
                "path": args.path,
                "model_type": args.model_type,
                "total": next(iter(results.values())).total,
                "accuracy": {name: res.accuracy for name, res in results.items()},
                "num_correct": {name: res.num_correct for name, res in results.items()},
            }
            if args.per_problem:
                out["problems"] = {name: res.to_dict(True)["problems"] for name, res in results.items()}
        else:
            out = {"path": args.path, **results[settings[0].name].to_dict(args.per_problem)}
        print(json.dumps(out, ensure_ascii=False, allow_nan=False))
    else:
        for name, res in results.items():
            label = f"{name}: " if args.all else ""
            print(f"{label}{res.accuracy} ({res.num_correct}/{res.total} correct)")
    return 0


def run_report(args) -> int:
    with reading_runs():
        try:
            report = build_report(args.runs, args.output, model_type=args.model_type, metric=args.metric)
        except ValueError as exc:  # a run file that cannot be used, an unknown metric, a run with no problems
            raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps(report.rows_as_dicts(), ensure_ascii=False, allow_nan=False))
    elif args.brief:
        print(render_brief(report.rows, report.metric, report.baseline), end="")
        print(f"full report: {Path(args.output) / 'report.md'}")
    else:
        print(report.markdown)
        for path in report.files:
            print(f"wrote {path}", file=sys.stderr)
    return 0
