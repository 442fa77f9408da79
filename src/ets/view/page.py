"""One self-contained HTML page from one or two runs: the page's HTML, CSS and
JavaScript (package data beside this module) inlined, the data embedded as
JSON. The page loads nothing: it opens from disk, offline.

The index of problems is one JSON block, parsed at load; each problem's tree
is a JSON block of its own, parsed only when that problem is shown, so a page
of hundreds of problems opens as fast as its index.
"""

from __future__ import annotations

import html
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from ets import __version__
from ets.evaluate.answers import RunFileError
from ets.evaluate.grade import default_grader
from ets.evaluate.runs import check_output
from ets.files import write_atomic
from ets.view.data import RunView, ViewError, has_trees

ASSETS = "assets"


def _asset(name: str) -> str:
    return resources.files("ets.view").joinpath(ASSETS, name).read_text(encoding="utf-8")


def _json_block(element_id: str, data: Any) -> str:
    # "<" escaped as \u003c (still JSON): no "</script>" can end the block early; NaN is no JSON: the page
    # would not open (the readers refuse it in the run files, so one here is a bug)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def match_problems(runs: Sequence[RunView]) -> list[tuple[str, list[int | None]]]:
    """Problems in the first run's order (then those only the second has), each
    with its position in every run, None where a run lacks it. Two runs must be
    of one dataset: a problem id present in both holds the same question."""
    positions: list[dict[str, int]] = [{str(row["id"]): i for i, row in enumerate(r.index)} for r in runs]
    keys = list(dict.fromkeys(k for index in positions for k in index))
    if len(runs) == 2:
        shared = [k for k in keys if k in positions[0] and k in positions[1]]
        if not shared:
            raise ViewError(f"{runs[0].path} and {runs[1].path} share no problem id: not runs of one dataset")
        for key in shared:
            q0 = runs[0].trees[positions[0][key]]["question"]
            q1 = runs[1].trees[positions[1][key]]["question"]
            if q0 != q1:
                raise ViewError(f"problem {key} has another question in {runs[1].path} than in {runs[0].path}: "
                                "not runs of one dataset")
    return [(key, [index.get(key) for index in positions]) for key in keys]


def render_page(runs: Sequence[RunView], initial: str | None = None) -> str:
    if not 1 <= len(runs) <= 2:
        raise ViewError(f"one or two runs, not {len(runs)}")
    problems = []
    tree_blocks = []
    for k, (key, where) in enumerate(match_problems(runs)):
        first = next(runs[r].index[i] for r, i in enumerate(where) if i is not None)
        problems.append({"key": key, "id": first["id"], "question": first["question"],
                         "rows": [runs[r].index[i] if i is not None else None for r, i in enumerate(where)]})
        for r, i in enumerate(where):
            if i is not None:
                tree_blocks.append(_json_block(f"tree-{r}-{k}", runs[r].trees[i]))
    # one colour scale for the page: the range of the PRM scores the runs gave (roots have none)
    scores = [x for r in runs for t in r.trees for x in t["nodes"]["score"][1:]]
    index = {
        "version": __version__,
        "runs": [r.summary() for r in runs],
        "score_range": [min(scores), max(scores)] if scores else [0.0, 1.0],
        "problems": problems,
        "initial": initial,
    }
    title = "ets view: " + " vs ".join(r.label for r in runs)
    values = {
        "__ETS_TITLE__": html.escape(title),
        "/*__ETS_CSS__*/": _asset("view.css"),
        "<!--__ETS_DATA__-->": _json_block("ets-index", index) + "\n" + "\n".join(tree_blocks),
        "/*__ETS_JS__*/": _asset("view.js"),
    }
    template = _asset("view.html")
    for marker in values:
        if marker not in template:
            raise RuntimeError(f"view.html lacks its {marker} marker")
    # one pass: text put in (a step, a question) is never searched for markers
    return re.sub("|".join(re.escape(m) for m in values), lambda m: values[m.group(0)], template)


def check_page_path(output: str | Path, flag: str = "--output") -> Path:
    """Refuse a page path that is a directory or one of a run's own files (:func:`ets.evaluate.runs.own_file`)."""
    out = Path(output)
    check_output(out, flag)
    if out.is_dir():
        raise ViewError(f"{flag} {out} is a directory; give the HTML file to write")
    return out


def render_view(run_dirs: Sequence[str | Path], *, problem_ids: Sequence[str] | None = None,
                model_type: str | None = None, grader=None) -> tuple[str, list[RunView]]:
    """Read one or two run directories: the page, and the runs as read."""
    grader = grader or default_grader()  # shared: the runs' answers are graded once
    runs = [RunView(d, grader=grader, problem_ids=problem_ids, model_type=model_type) for d in run_dirs]
    return render_page(runs, str(problem_ids[0]) if problem_ids else None), runs


def build_view(run_dirs: Sequence[str | Path], output: str | Path, *, problem_ids: Sequence[str] | None = None,
               model_type: str | None = None, grader=None) -> tuple[Path, list[RunView]]:
    """Read one or two run directories and write the page to ``output`` (aside, then renamed: a failed
    write leaves the earlier page)."""
    out = check_page_path(output)
    page, runs = render_view(run_dirs, problem_ids=problem_ids, model_type=model_type, grader=grader)
    write_atomic(out, page)
    return out, runs


def report_views(runs: Sequence[tuple[Path, str, int | None]], output: str | Path, *, model_type: str | None = None,
                 grader=None) -> list[tuple[str, Path, str]]:
    """The pages ``ets report`` links to, from its runs as (directory, method,
    width): per width, the two runs side by side where exactly two ran it, else
    a page per run. Runs without trees (the reference's) get none; a run that
    cannot be read is skipped with a warning (the other of a pair gets its own
    page). Returns (title, page path, page) triples; the report writes them with
    its other files."""
    by_width: dict[int | None, list[tuple[Path, str, int | None]]] = {}
    for run in runs:
        if has_trees(run[0]):
            by_width.setdefault(run[2], []).append(run)
    pages: list[tuple[str, Path, str]] = []
    names: set[str] = set()

    def add(members: list[tuple[Path, str, int | None]], width: int | None) -> bool:
        try:
            page, views = render_view([d for d, _, _ in members], model_type=model_type, grader=grader)
        except RunFileError as exc:
            print(f"ets: warning: no tree page for {', '.join(str(d) for d, _, _ in members)}: {exc}",
                  file=sys.stderr)
            return False
        name = "trees_" + "_vs_".join(m for _, m, _ in members) + ("" if width is None else f"_width_{width}")
        while name in names:
            name += "_"
        names.add(name)
        pages.append((" vs ".join(v.label for v in views), Path(output) / f"{name}.html", page))
        return True

    for width, group in by_width.items():
        for members in ([group] if len(group) == 2 else [[run] for run in group]):
            if not add(members, width) and len(members) == 2:
                for member in members:
                    add([member], width)
    return pages
