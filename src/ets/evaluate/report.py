"""``ets report``: one table and three plots over runs of several methods and
widths (the figures of the ETS paper, for the user's own runs).

A run directory holds ``answers.json``, ``stats.log`` and (for runs of
``ets run``) ``run.json``; a sweep directory holds run directories named
``width_N``. Runs are grouped by ``config.select_method`` (``unknown`` for a
reference run without ``run.json``, whose width is read from its directory
name, e.g. ``width_16`` or ``ets_16_math500``).

The cost figures are those of ``stats.log`` (falling back to ``run.json``'s
``stats``); ``prompt_tokens_reused`` comes from ``run.json``.

Runs of different datasets (a problem id holding another question) are refused, as is a sweep whose
``width_*`` runs were not made together (one with other settings or problem count, as an earlier run
left beside an ``--overwrite``n one). Every file is written aside and renamed once all are written.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ets.evaluate.aggregate import ALL_SETTINGS
from ets.evaluate.answers import ANSWERS_NAME, RunFileError, find_answers, ground_truth_gaps, load_answers
from ets.evaluate.evaluator import evaluate_settings
from ets.evaluate.grade import Grader, default_grader
from ets.evaluate.intervals import paired_difference, wilson_interval
from ets.evaluate.runs import (  # noqa: F401 - read_stats_log is imported from here too
    METHOD_LABELS,
    ReportError,
    check_output,
    model_type_of,
    other_questions,
    questions_of,
    read_run_json,
    read_stats_log,
    run_label,
)
from ets.files import write_all
from ets.view.data import has_trees, kv_by_depth
from ets.view.page import report_views

# figure geometry: 6.4 x 4.8 inches at 100 dpi -> 640 x 480 pixels
FIGSIZE = (6.4, 4.8)
DPI = 100

PLOTS = (
    # file name, x field, x label
    ("accuracy_vs_width.png", "width", "width (finished trajectories per problem)"),
    ("accuracy_vs_kv_cache.png", "kv_cache_size", "KV cache size (tokens, summed over selection calls)"),
    ("accuracy_vs_tokens.png", "tokens_generated", "tokens generated"),
)

STAT_FIELDS = ("kv_cache_size", "prompt_tokens_reused", "tokens_generated", "model_calls", "time")
# the policy server's own figures (vLLM's or SGLang's /metrics), shown when a run has them, beside the selection's KV figure
SERVER_FIELDS = ("server_prefix_cache_hits", "server_prefix_cache_queries", "server_kv_cache_usage_peak")
SERVER_HEADS = ("server prefix hits", "server prefix queries", "server KV peak (%)")


def server_fields(rows: Sequence["RunRow"]) -> tuple[str, ...]:
    """:data:`SERVER_FIELDS` when a run of ``rows`` was searched on a server that reports them, else none."""
    return SERVER_FIELDS if any(r.stats.get(k) for r in rows for k in SERVER_FIELDS) else ()

# config keys that may differ between the width_* runs of one sweep (how it ran, not what it computed)
SWEEP_FREE_KEYS = ("width", "num_threads", "store_path")

_SETTING_LONG = {
    "majority_vote/weighted/last": "accuracy by majority vote weighted by the last step score",
    "best_of_n/last": "accuracy of the best trajectory by its last step score",
}

_SETTING_SHORT = {
    "best_of_n/min": "BoN min",
    "best_of_n/prod": "BoN prod",
    "best_of_n/mean": "BoN mean",
    "best_of_n/last": "BoN last",
    "majority_vote/unweighted": "MV",
    "majority_vote/weighted/min": "WMV min",
    "majority_vote/weighted/prod": "WMV prod",
    "majority_vote/weighted/mean": "WMV mean",
    "majority_vote/weighted/last": "WMV last",
}


@dataclass
class RunRow:
    path: Path
    method: str
    width: int | None
    model_type: str
    num_problems: int
    accuracy: dict[str, float]
    stats: dict[str, float | int | None] = field(default_factory=dict)
    correct: dict[str, dict] = field(default_factory=dict)  # setting -> {problem id: correct}
    label: str = ""  # the run's name in tables: "ETS width 16", "greedy" (runs.run_label)
    questions: dict = field(default_factory=dict)  # problem id -> question: which dataset the run is of
    run_json: dict = field(default_factory=dict)  # its run.json ({} for a reference run)

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "width": self.width,
            "run": str(self.path),
            "model_type": self.model_type,
            "problems": self.num_problems,
            **{name: self.accuracy[name] for name in (s.name for s in ALL_SETTINGS)},
            **{k: self.stats.get(k) for k in STAT_FIELDS + SERVER_FIELDS if k in STAT_FIELDS or self.stats.get(k)},
        }


@dataclass
class Report:
    rows: list[RunRow]
    metric: str
    markdown: str
    csv: str
    files: list[Path]
    baseline: RunRow | None = None  # the first run named: what the differences are to

    def rows_as_dicts(self) -> list[dict]:
        return [r.as_dict() for r in self.rows]


# -- discovering and reading runs -----------------------------------------------

def _width_key(path: Path) -> tuple:
    m = re.search(r"(\d+)", path.name)
    return (0, int(m.group(1)), path.name) if m else (1, 0, path.name)


def discover_sweeps(paths: Iterable[str | Path]) -> list[tuple[Path | None, list[Path]]]:
    """Each path as (sweep directory, its runs) or (None, [the run]): a run directory holds an answers file
    (answers.json, or the one JSON file of answers beside run.json), a sweep directory holds runs in its
    ``width_*`` subdirectories (else in any subdirectories)."""
    found: list[tuple[Path | None, list[Path]]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.suffix == ".json":
            p = p.parent
        if not p.exists():
            raise ReportError(f"{p}: no such run directory")
        if not p.is_dir():
            raise ReportError(f"{p}: expected a run directory (holding {ANSWERS_NAME}) or a sweep directory")
        if find_answers(p):
            found.append((None, [p]))
            continue
        children = sorted((c for c in p.glob("width_*") if c.is_dir() and find_answers(c)), key=_width_key)
        if not children:
            children = sorted((c for c in p.iterdir() if c.is_dir() and find_answers(c)), key=_width_key)
        if not children:
            raise ReportError(f"{p}: no {ANSWERS_NAME} in it nor in its width_* subdirectories")
        found.append((p, children))
    return found


def discover_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories: each path is a run or a sweep (:func:`discover_sweeps`), each run listed once."""
    return _each_once(discover_sweeps(paths))


def _each_once(sweeps: Iterable[tuple[Path | None, list[Path]]]) -> list[Path]:
    seen, unique = set(), []
    for _, runs in sweeps:
        for r in runs:
            key = r.resolve()
            if key not in seen:
                seen.add(key)
                unique.append(r)
    return unique


def _width_from_name(name: str) -> int | None:
    m = re.search(r"width[_-]?(\d+)", name, re.I) or re.search(r"(?:^|[_-])(\d+)(?=[_-]|$)", name)
    return int(m.group(1)) if m else None


def read_run(path: Path, model_type: str | None = None, grader: Grader | None = None) -> RunRow:
    """Evaluate one run directory under every setting and gather its figures."""
    run_json = read_run_json(path)
    config = run_json.get("config") or {}
    json_stats = run_json.get("stats") or {}

    width = config.get("width")
    if width is None:
        width = _width_from_name(path.name)
    method = config.get("select_method") or "unknown"
    mtype = model_type or model_type_of(config)

    stats: dict[str, float | int | None] = {k: json_stats.get(k) for k in STAT_FIELDS + SERVER_FIELDS}
    log_path = path / "stats.log"
    if log_path.is_file():
        from_log = read_stats_log(log_path)
        for key, value in from_log.items():
            other = json_stats.get(key)
            if other is not None and key != "time" and other != value:
                print(f"ets: warning: {path}: {key} is {value} in stats.log but {other} in run.json; "
                      "using stats.log", file=sys.stderr)
            stats[key] = value
    elif not json_stats:
        print(f"ets: warning: {path}: no stats.log nor run.json stats; cost columns left empty",
              file=sys.stderr)

    answers = find_answers(path) or path / ANSWERS_NAME
    problems = load_answers(answers)
    gaps = ground_truth_gaps(problems, answers)
    if gaps:
        print(f"ets report: warning: {gaps}", file=sys.stderr)
    results = evaluate_settings(problems, ALL_SETTINGS, mtype, grader)
    width = int(width) if width is not None else None
    return RunRow(path=path, method=method, width=width, label=run_label(method, width, config.get("temperature")),
                  model_type=mtype, num_problems=len(problems),
                  accuracy={name: res.accuracy for name, res in results.items()}, stats=stats,
                  correct={name: {p.id: p.correct for p in res.problems} for name, res in results.items()},
                  questions=questions_of(problems), run_json=run_json)


def check_one_dataset(rows: Sequence[RunRow]) -> None:
    """Refuse runs of different datasets: their problem ids match, their questions do not, and a paired
    difference over them would compare unrelated problems."""
    for i, row in enumerate(rows):
        for earlier in rows[:i]:
            differs = other_questions(earlier.questions, row.questions)
            if differs:
                raise ReportError(f"{earlier.path} and {row.path} are not runs of one dataset ({differs}); "
                                  "report them separately")


def swept_keys(name: str) -> set[str]:
    """The keys a sweep's run directory is named by: ``width_16`` -> {width}; ``lambdac=0.5`` or
    ``lambdac=0.5,width=16`` (``ets run --sweep``) -> {lambdac} or {lambdac, width}."""
    if re.fullmatch(r"width_\d+", name):
        return {"width"}
    return {part.split("=", 1)[0] for part in name.split(",") if "=" in part}


def _sweep_settings(row: RunRow) -> dict[str, Any]:
    config = row.run_json.get("config") or {}
    free = {*SWEEP_FREE_KEYS, *swept_keys(row.path.name)}
    return {k: v for k, v in config.items() if k not in free}


def check_sweep(sweep: Path, rows: Sequence[RunRow]) -> None:
    """Refuse a sweep directory whose width_* runs were not made together: each is compared with the one
    that finished last (run.json's settings but the width, its num_problems, and the questions); a run that
    differs was left by an earlier run (``ets run --overwrite`` replaces only the widths it runs)."""
    if len(rows) < 2:
        return
    newest = max(rows, key=lambda r: str(r.run_json.get("finished_at") or ""))
    for row in rows:
        if row is newest:
            continue
        here, there = row.path.name, newest.path.name
        then, now = _sweep_settings(row), _sweep_settings(newest)
        differs = [f"{k} {then[k]!r} in {here}, {now[k]!r} in {there}"
                   for k in sorted(then.keys() & now.keys(), key=str) if then[k] != now[k]]
        counts = row.run_json.get("num_problems"), newest.run_json.get("num_problems")
        if None not in counts and counts[0] != counts[1]:
            differs.append(f"{counts[0]} problems in {here}, {counts[1]} in {there}")
        other = other_questions(row.questions, newest.questions, (here, there))
        if other:
            differs.append(other)
        if differs:
            finished = row.run_json.get("finished_at")
            raise ReportError(
                f"{row.path} was not made with {there}, the run of the sweep {sweep} that finished last "
                f"({'; '.join(differs[:3])}{'; …' if len(differs) > 3 else ''}): left by an earlier run"
                f"{f' (finished {finished})' if finished else ''}? Remove it, or name the runs to report one by one")


# -- what tells a method's runs apart ----------------------------------------------

def varying_keys(rows: Sequence[RunRow]) -> dict[str, list[str]]:
    """Per method, the config keys (but width and how it ran) whose values differ between its runs: a
    ``--sweep lambdac=...`` of ETS gives {"softmax_costmodel": ["lambdac"]}."""
    configs: dict[str, list[dict]] = {}
    for r in rows:
        configs.setdefault(r.method, []).append(r.run_json.get("config") or {})
    out = {}
    for method, group in configs.items():
        keys = sorted({k for c in group for k in c} - set(SWEEP_FREE_KEYS), key=str)
        out[method] = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in group}) > 1]
    return out


def setting_text(row: RunRow, keys: Sequence[str]) -> str:
    """``lambdac=0.5``: the row's values of ``keys``."""
    config = row.run_json.get("config") or {}
    return ", ".join(f"{k}={config.get(k)}" for k in keys)


# -- the table --------------------------------------------------------------------

def _sort_key(row: RunRow):
    return (row.method, row.width is None, row.width or 0, str(row.path))


def _fmt_md(value, kind: str) -> str:
    if value is None:
        return ""
    if kind == "acc":
        return f"{100 * value:.1f}"
    if kind == "time":
        return f"{value:.2f}"
    if kind == "pct":
        return f"{100 * value:.1f}"
    return str(value)


def render_markdown(rows: Sequence[RunRow], metric: str) -> str:
    settings = [s.name for s in ALL_SETTINGS]
    head = (["method", "width"] + [_SETTING_SHORT[s] for s in settings]
            + ["KV cache", *SERVER_HEADS[:len(server_fields(rows))], "prefix reused", "tokens gen.", "model calls",
               "time (s)", "problems", "run"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    varying = varying_keys(rows)
    for r in rows:
        setting = setting_text(r, varying.get(r.method, []))
        cells = [f"{r.method} ({setting})" if setting else r.method, "" if r.width is None else str(r.width)]
        cells += [_fmt_md(r.accuracy[s], "acc") for s in settings]
        cells += [_fmt_md(r.stats.get(k), "time" if k == "time" else "int") for k in STAT_FIELDS[:1]]
        cells += [_fmt_md(r.stats.get(k), "pct" if k == "server_kv_cache_usage_peak" else "int")
                  for k in server_fields(rows)]
        cells += [_fmt_md(r.stats.get(k), "time" if k == "time" else "int") for k in STAT_FIELDS[1:]]
        cells += [str(r.num_problems), f"`{r.path}`"]
        lines.append("| " + " | ".join(cells) + " |")
    legend = (
        "\nAccuracy in %. BoN = best-of-N by the aggregate (min, prod, mean, last) of the step scores; "
        "MV = majority vote; WMV = majority vote weighted by that aggregate. KV cache = the KV-cache size "
        "proxy (tokens, summed over selection calls; see docs/algorithm.md#the-kv-cache-figure); "
        f"prefix reused = prompt tokens served from the prefix cache. Plots show {metric}.\n"
        + ("Server prefix hits / queries = prompt tokens the policy server (vLLM, SGLang) found in / looked up in its "
           "prefix cache, by its own counters; server KV peak = the highest share of its KV-cache blocks in use "
           "(docs/serving.md#the-servers-own-kv-figures).\n" if server_fields(rows) else "")
    )
    return "\n".join(lines) + "\n" + legend


@dataclass
class Interval:
    """A run's accuracy under one setting with its 95 % interval, and its paired difference to a baseline."""

    row: RunRow
    accuracy: float
    low: float
    high: float
    difference: tuple[float, float, float] | None  # (difference, low, high); None: the baseline, or other problems
    same_problems: bool


def accuracy_intervals(rows: Sequence[RunRow], metric: str, baseline: RunRow) -> list[Interval]:
    """Each run's accuracy with a Wilson interval, and its difference to ``baseline`` paired over the same
    problems (only the problems where the two differ move it)."""
    out = []
    for r in rows:
        correct, base = r.correct[metric], baseline.correct[metric]
        low, high = wilson_interval(sum(correct.values()), len(correct))
        same = set(correct) == set(base)
        difference = None
        if r is not baseline and same:
            ids = sorted(correct, key=str)
            difference = paired_difference([correct[i] for i in ids], [base[i] for i in ids])
        out.append(Interval(r, r.accuracy[metric], low, high, difference, same))
    return out


def _points(d: tuple[float, float, float]) -> tuple[str, str]:
    return f"{100 * d[0]:+.1f}", f"[{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]"


def render_intervals(rows: Sequence[RunRow], metric: str, baseline: RunRow | None = None) -> str:
    """The metric's accuracy of each run with a 95 % interval, and each run against ``baseline`` (the
    first run named) on the same problems, paired."""
    if not rows:
        return ""
    base = baseline or rows[0]
    lines = [f"\n{metric}, 95 % intervals; the difference to `{base.path}` is paired over the same problems:\n",
             "| method | width | accuracy % | 95 % CI | difference (points) | 95 % CI | problems | run |",
             "|---|---|---|---|---|---|---|---|"]
    for i in accuracy_intervals(rows, metric, base):
        r = i.row
        diff, ci = _points(i.difference) if i.difference else ("" if i.same_problems else "other problems", "")
        lines.append(f"| {r.method} | {'' if r.width is None else r.width} | {100 * i.accuracy:.1f} | "
                     f"[{100 * i.low:.1f}, {100 * i.high:.1f}] | {diff} | {ci} | {r.num_problems} | `{r.path}` |")
    return "\n".join(lines) + "\n"


def render_brief(rows: Sequence[RunRow], metric: str, baseline: RunRow) -> str:
    """The few lines a terminal shows: each run's accuracy with its interval and its paired difference to
    ``baseline``, as aligned plain text."""
    intervals = accuracy_intervals(rows, metric, baseline)
    problems = sorted({r.num_problems for r in rows})
    table = [("run", "accuracy", "95 % CI", f"vs {baseline.label} (points)", "95 % CI")]
    for i in intervals:
        diff, ci = _points(i.difference) if i.difference else ("" if i.same_problems else "other problems", "")
        table.append((i.row.label, f"{100 * i.accuracy:.1f} %", f"[{100 * i.low:.1f}, {100 * i.high:.1f}]", diff, ci))
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = [f"{'/'.join(map(str, problems))} problems, {_SETTING_LONG.get(metric, metric)}; 95 % intervals, "
             f"the difference paired over the same problems:"]
    lines += ["  " + "   ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
              .rstrip() for row in table]
    return "\n".join(lines) + "\n"


def render_kv_by_depth(rows: Sequence[RunRow]) -> str:
    """Each run's KV-cache figure by the depth of the selection call, from its trees (a run without
    trees, as the reference's, gets no column): where in the search one method holds less than another."""
    columns = []
    for r in rows:
        if not has_trees(r.path):
            continue
        try:
            columns.append((r, kv_by_depth(r.path)))
        except RunFileError as exc:
            print(f"ets: warning: no KV figure by depth for {r.path}: {exc}", file=sys.stderr)
    if not columns:
        return ""

    def cell(value: int, total: int) -> str:
        return f"{value:,} ({100 * value / total:.0f} %)" if total else f"{value:,}"

    head = ["depth"] + [r.label for r, _ in columns]
    lines = ["\nKV-cache figure by depth: what the selection calls at each depth add, summed over the problems, "
             "and its share of the run's figure (docs/algorithm.md#the-kv-cache-figure):\n",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for depth in sorted({d for _, kv in columns for d in kv.by_depth}):
        lines.append(f"| {depth} | " + " | ".join(
            cell(kv.by_depth[depth], kv.total) if depth in kv.by_depth else "" for _, kv in columns) + " |")
    lines.append("| all | " + " | ".join(f"{kv.total:,}" for _, kv in columns) + " |")
    lines.append("| of it, the prompt | " + " | ".join(cell(kv.prompt, kv.total) for _, kv in columns) + " |")
    return "\n".join(lines) + "\n"


def render_csv(rows: Sequence[RunRow]) -> str:
    settings = [s.name for s in ALL_SETTINGS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    stat_fields = STAT_FIELDS + server_fields(rows)
    writer.writerow(["method", "width", *settings, *stat_fields, "problems", "model_type", "run"])
    for r in rows:
        writer.writerow([r.method, "" if r.width is None else r.width,
                         *(repr(r.accuracy[s]) for s in settings),
                         *("" if r.stats.get(k) is None else r.stats[k] for k in stat_fields),
                         r.num_problems, r.model_type, str(r.path)])
    return buf.getvalue()


# -- the plots ----------------------------------------------------------------------

def _method_label(method: str) -> str:
    label = METHOD_LABELS.get(method)
    return f"{label} ({method})" if label and label != method else method


def plot_accuracy(rows: Sequence[RunRow], x_field: str, x_label: str, metric: str) -> bytes:
    """One PNG of ``metric`` accuracy against ``x_field``, FIGSIZE at DPI (640 x 480 pixels): a line per
    method along its widths; where a method's runs differ in other keys too (a ``--sweep``), a line per
    width through those settings (the paper's trade-off of accuracy against the KV-cache figure), each
    point labelled with its setting (against width: a line per setting)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    varying = varying_keys(rows)
    lines: dict[str, list[tuple[float, float, float, str]]] = {}  # label -> (order, x, accuracy %, point label)
    for r in rows:
        x = r.width if x_field == "width" else r.stats.get(x_field)
        if x is None:
            continue
        setting = setting_text(r, varying.get(r.method, []))
        if not setting:  # along the width sweep
            key, order, point = _method_label(r.method), r.width or 0, ""
        elif x_field == "width":
            key, order, point = f"{_method_label(r.method)} ({setting})", r.width or 0, ""
        else:  # along the setting, at one width
            key, order, point = f"{_method_label(r.method)}, width {r.width}", x, setting
        lines.setdefault(key, []).append((order, x, 100 * r.accuracy[metric], point))
    xs_all = []
    for label in sorted(lines):
        points = sorted(lines[label])
        xs_all += [p[1] for p in points]
        ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label=label)
        for _, x, y, point in points:
            if point:
                ax.annotate(point, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if xs_all and all(x > 0 for x in xs_all):
        ax.set_xscale("log", base=2 if x_field == "width" else 10)
        if x_field == "width":
            ticks = sorted(set(xs_all))
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(int(t)) for t in ticks])
    if not lines:
        ax.text(0.5, 0.5, f"no runs with {x_field}", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"accuracy (%), {metric}")
    ax.set_title(f"accuracy vs {x_label.split(' (')[0]}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=DPI, format="png")
    return png.getvalue()


# -- all together ---------------------------------------------------------------------

def build_report(
    paths: Sequence[str | Path],
    output: str | Path,
    model_type: str | None = None,
    metric: str = "majority_vote/weighted/last",
    grader: Grader | None = None,
) -> Report:
    """Evaluate the runs and write report.md, report.csv, the three plots and
    the runs' tree pages (``ets view``, linked from report.md) into ``output``."""
    if metric not in {s.name for s in ALL_SETTINGS}:
        raise ReportError(f"unknown metric {metric!r}; known: {', '.join(s.name for s in ALL_SETTINGS)}")
    grader = grader or default_grader()
    out = Path(output)
    sweeps = discover_sweeps(paths)
    run_dirs = _each_once(sweeps)
    reads = [find_answers(d) or d / ANSWERS_NAME for d in run_dirs]
    check_output(out, "--output", reads)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--output {out} is a file; give the directory to write the report into")
    in_order = [read_run(p, model_type, grader) for p in run_dirs]
    by_path = {r.path.resolve(): r for r in in_order}
    for sweep, runs in sweeps:
        if sweep is not None:
            check_sweep(sweep, [by_path[r.resolve()] for r in runs])
    check_one_dataset(in_order)
    rows = sorted(in_order, key=_sort_key)
    views = report_views([(r.path, r.method, r.width) for r in rows], out, model_type=model_type, grader=grader)
    markdown = (render_markdown(rows, metric) + render_intervals(rows, metric, baseline=in_order[0] if in_order else None)
                + render_kv_by_depth(rows))
    if views:
        markdown += "\nSearch trees (`ets view`, open in a browser): " + ", ".join(
            f"[{title}]({page.name})" for title, page, _ in views) + "\n"
    csv_text = render_csv(rows)
    contents: dict[Path, str | bytes] = {out / "report.md": markdown, out / "report.csv": csv_text}
    for name, x_field, x_label in PLOTS:
        contents[out / name] = plot_accuracy(rows, x_field, x_label, metric)
    contents.update({page: html for _, page, html in views})
    for path in contents:
        check_output(path, "--output", reads)
    write_all(contents)  # all aside first: a full disk or Ctrl-C leaves the earlier report whole
    return Report(rows=rows, metric=metric, markdown=markdown, csv=csv_text, files=list(contents),
                  baseline=in_order[0] if in_order else None)
