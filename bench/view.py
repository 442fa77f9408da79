"""How large a run `ets view` handles: a scripted run of many problems (ETS and
REBASE at one width, no model), its page written, then opened in headless
Debian chromium: time to a usable page, to sort the index, to filter it and to
draw one problem's trees.

    .venv/bin/python bench/view.py [--problems 500] [--width 16] [--repeat 3]

With --screenshot PAGE PNG it only takes a screenshot of a page (the README's):

    .venv/bin/python bench/view.py --screenshot view.html docs/img/view.png --problem 9 --node 1:12 --filter all

Needs /usr/bin/chromium and the playwright package (never a downloaded browser).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ets.cli import main as ets
from ets.view import build_view
from ets.view.browser import chromium, open_view, unavailable


def make_runs(root: Path, problems: int, width: int) -> list[Path]:
    runs = []
    for method in ("softmax_costmodel", "softmax"):
        run = root / method
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert ets(["run", "--scripted", "--input_path", "asdiv", "--num_samples", str(problems),
                        "--width", str(width), "--select_method", method,
                        "--output_path", str(run / "answers.json"), "--quiet"]) == 0
        print(f"scripted {method} run: {problems} problems at width {width} in {time.perf_counter() - started:.1f} s")
        runs.append(run)
    return runs


# runs an action in the page; resolves once the frame after it is painted
TIMED = """async (what) => {
  const act = {
    sort: () => [...document.querySelectorAll('#index thead th')].find((th) => th.textContent.startsWith('KV')).click(),
    filter: () => { const f = document.getElementById('filter'); f.selectedIndex = 1; f.dispatchEvent(new Event('change')); },
    unfilter: () => { const f = document.getElementById('filter'); f.selectedIndex = 0; f.dispatchEvent(new Event('change')); },
    problem: () => document.querySelector('#index tbody tr:last-child').click(),
  }[what];
  const t = performance.now();
  act();
  await new Promise((done) => requestAnimationFrame(() => setTimeout(done)));
  return performance.now() - t;
}"""


def in_browser(browser, page_path: Path, repeat: int) -> dict[str, float]:
    """Median over `repeat` fresh pages, in ms."""
    times: dict[str, list[float]] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        page, requests, errors = open_view(browser, page_path)
        times.setdefault("open a tab and the page (wall)", []).append(1000 * (time.perf_counter() - started))
        times.setdefault("page asked for -> usable", []).append(float(page.evaluate("document.body.dataset.readyMs")))
        times.setdefault("  of which the page's script", []).append(float(page.evaluate("document.body.dataset.loadMs")))
        for label, what in (("sort the index by KV", "sort"), ("filter the index", "filter"),
                            ("show all again", "unfilter"), ("draw another problem", "problem")):
            times.setdefault(label, []).append(page.evaluate(TIMED, what))
        assert requests == [page_path.resolve().as_uri()], requests  # nothing fetched
        assert not errors, errors
        page.close()
    return {k: statistics.median(v) for k, v in times.items()}


def screenshot(page_path: Path, png: Path, problem: str | None, node: str | None, index_filter: str | None) -> None:
    with chromium() as browser:
        page, requests, errors = open_view(browser, page_path, viewport=(1600, 1000),
                                           fragment=f"#p={problem}" if problem is not None else "")
        if index_filter:
            page.select_option("#filter", index_filter)
        if node:
            run, node_id = node.split(":")
            page.locator(f"svg.tree[data-run='{run}'] g.node[data-id='{node_id}']").click()
        png.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(png))
        assert not errors and requests == [page_path.resolve().as_uri()], (errors, requests)
    print(f"wrote {png}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--screenshot", nargs=2, metavar=("PAGE", "PNG"), help="only a screenshot of PAGE")
    parser.add_argument("--problem", help="with --screenshot: the problem shown (its id)")
    parser.add_argument("--node", metavar="RUN:ID", help="with --screenshot: the node clicked (run 0 or 1)")
    parser.add_argument("--filter", help="with --screenshot: the index filter chosen (all, only0, only1, onlyone, ...)")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"no browser: {reason}", file=sys.stderr)
        return 2
    if args.screenshot:
        screenshot(Path(args.screenshot[0]), Path(args.screenshot[1]), args.problem, args.node, args.filter)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = make_runs(root, args.problems, args.width)
        pages = {}
        for name, dirs in (("one run (ETS)", runs[:1]), ("two runs side by side", runs)):
            started = time.perf_counter()
            page, views = build_view(dirs, root / f"{len(dirs)}.html")
            nodes = sum(sum(r["nodes"] for r in v.index) for v in views)
            print(f"{name}: page written in {time.perf_counter() - started:.1f} s, {page.stat().st_size / 1e6:.1f} MB, "
                  f"{nodes} nodes")
            pages[name] = page
        with chromium() as browser:
            results = {name: in_browser(browser, page, args.repeat) for name, page in pages.items()}
    print(f"\nin headless chromium, median of {args.repeat} fresh pages, ms")
    names = list(results)
    print(f"{'':34}" + "".join(f"{n:>24}" for n in names))
    for key in results[names[0]]:
        print(f"{key:34}" + "".join(f"{results[n][key]:>24.0f}" for n in names))
    return 0


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        sys.exit(main())
