"""``ets view RUN_DIR [RUN_DIR2] [--problem ID] [-o view.html]``."""

from __future__ import annotations

from ets.cli import CommandError
from ets.evaluate.commands import reading_runs
from ets.view.page import build_view


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view",
        help="the search trees of a run, or of two runs side by side, as one offline HTML page",
        description=(
            "Write one self-contained HTML page (no server, no network: open it from disk) showing each "
            "problem's search tree: nodes coloured by PRM score, retired and pruned nodes and answers marked, "
            "the trajectories best-of-N (last score) and the weighted majority vote (last) pick, and per depth "
            "the candidates, their allocations and the KV-cache figure. Given two runs of one dataset (e.g. ETS "
            "and REBASE at the same width) it shows them side by side, problem by problem."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="one or two run directories written by `ets run`")
    p.add_argument("--problem", action="append", metavar="ID",
                   help="only this problem (repeatable); the page opens on the first")
    p.add_argument("--output", "-o", default="view.html", help="the HTML file to write (default: view.html)")
    p.set_defaults(func=run_view)


def run_view(args) -> int:
    if len(args.runs) > 2:
        raise CommandError(f"one or two run directories, not {len(args.runs)}")
    with reading_runs():
        out, runs = build_view(args.runs, args.output, problem_ids=args.problem)
    problems = max(len(r.index) for r in runs)
    print(f"wrote {out} ({problems} problems, {' vs '.join(r.label for r in runs)}, "
          f"{out.stat().st_size / 1e6:.1f} MB)")
    return 0
