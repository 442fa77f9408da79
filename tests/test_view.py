"""ets view: the page's data against the run files and the selectors, then the
page itself in a real headless browser (Debian's chromium, driven by Playwright).

The runs are scripted searches (no model) of ETS and REBASE at one width, on a
small dataset whose ground truths are digits, so some answers are right.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from ets.cli import main
from ets.config import SearchConfig
from ets.evaluate.extract import extract_ground_truth
from ets.selection import allocate
from ets.selection.common import SelectionParams
from ets.tree import Tree
from ets.view import RunView, ViewError, build_view, selections
from ets.view.browser import chromium, open_view, unavailable

WIDTH = 6
METHODS = ("softmax_costmodel", "softmax")  # ETS, REBASE
# one question holds markup that would end the page's data block if it were not escaped
HOSTILE = 'Tom has </script><script>document.title="owned"</script> 3 apples. How many?'
QUESTIONS = [(f"Ann has {n} pens and gets {n % 4} more. How many pens?", str(n + n % 4))
             for n in range(1, 9) if n + n % 4 < 10] + [(HOSTILE, "3")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("view_runs")
    data = root / "digits.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS), encoding="utf-8")
    out = {}
    for method in METHODS:
        out[method] = root / method
        assert main(["run", "--scripted", "--input_path", str(data), "--width", str(WIDTH), "--select_method", method,
                     "--output_path", str(out[method] / "answers.json"), "--quiet"]) == 0
    return out


def tree_files(run: Path) -> list[dict]:
    answers = json.loads((run / "answers.json").read_text(encoding="utf-8"))
    return [json.loads((run / "trees" / f"q{a['id']}.json").read_text(encoding="utf-8")) for a in answers]


def test_selections_rebuilt_from_the_tree_are_the_searchs(runs):
    """Per depth: the rebuilt KV figures add up to what the search recorded, and each
    candidate's children are what the selector gives those candidates at that width."""
    checked = 0
    for method, run in runs.items():
        for saved in tree_files(run):
            config = SearchConfig.from_dict(saved["fingerprint"]["config"])
            tree = Tree.from_nodes(saved["nodes"])
            chosen = selections(tree, config.width, config.max_depth, config.max_tokens)
            assert sum(s.kv for s in chosen) == saved["stats"]["kv_cache_size"]
            assert sum(len(s.candidates) for s in chosen) == saved["stats"]["expansions"] + sum(
                k == 0 for s in chosen for k in s.allocation)
            for s in chosen:
                expected = allocate(method, tree, s.candidates, s.width_left, SelectionParams.from_config(config), None)
                assert s.allocation == [expected.get(c, 0) for c in s.candidates]
                assert s.kv == tree.kv_size(s.candidates)
                checked += 1
            # every node with children was a candidate
            expanded = {c for s in chosen for c, k in zip(s.candidates, s.allocation) if k}
            assert expanded == {n.id for n in tree.nodes if n.children}
    assert checked > 20


def test_leaves_picks_and_index_agree_with_the_run_files_and_ets_evaluate(runs, capsys):
    for method, run in runs.items():
        view = RunView(run)
        saved = tree_files(run)
        capsys.readouterr()
        assert main(["evaluate", "--path", str(run), "--all", "--json", "--per_problem", "--model_type", "raw"]) == 0
        evaluated = json.loads(capsys.readouterr().out)["problems"]
        assert len(view.trees) == len(saved) == len(QUESTIONS)
        right_leaves = 0
        for i, (data, row, file) in enumerate(zip(view.trees, view.index, saved)):
            nodes = file["nodes"]
            assert row["nodes"] == len(data["nodes"]["parent"]) == len(nodes)
            assert row["depth"] == max(n["depth"] for n in nodes)
            assert row["kv"] == file["stats"]["kv_cache_size"] == data["kv_derived"]
            assert row["tokens"] == file["stats"]["tokens_generated"]
            # leaves: the answer after "The answer is:", right when it is the digit of the ground truth
            truth = extract_ground_truth(file["answer"]["ground_truth_answer"])
            leaves = [n for n in nodes if n["leaf"]]
            assert sorted(map(int, data["leaves"])) == [n["id"] for n in leaves]
            for n in leaves:
                said = re.search(r"The answer is: (\d+)", n["step"]).group(1)
                assert data["leaves"][str(n["id"])]["answer"] == said
                assert data["leaves"][str(n["id"])]["correct"] == (said == truth)
                right_leaves += said == truth
            # the picked trajectories are ets evaluate's picks, as leaves of the tree
            for key, setting in (("bon", "best_of_n/last"), ("wmv", "majority_vote/weighted/last")):
                pick, picked = data["picks"][key], evaluated[setting][i]
                assert pick["correct"] == picked["correct"] == row[key]
                assert nodes[pick["node"]]["text"] == file["answer"]["model_answer"][picked["picked"]]["text"]
        assert right_leaves > 0  # the test means something: some answers are right
        summary = view.summary()
        assert summary["wmv_correct"] == sum(p["correct"] for p in evaluated["majority_vote/weighted/last"])
        assert summary["kv"] == sum(f["stats"]["kv_cache_size"] for f in saved)


def test_the_page_is_one_self_contained_file(runs, tmp_path):
    out, _ = build_view([runs["softmax_costmodel"], runs["softmax"]], tmp_path / "view.html")
    page = out.read_text(encoding="utf-8")
    # nothing to fetch: no external script, style sheet, image or font
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"'](?!data:)", page)
    assert not re.search(r"url\((?!data:|#)", page) and "@import" not in page  # url(#id): in-page
    # one JSON block per problem and run, plus the index; the hostile question stays inside its block
    assert len(re.findall(r'<script type="application/json" id="tree-\d-\d+">', page)) == 2 * len(QUESTIONS)
    assert page.count("</script>") == 2 * len(QUESTIONS) + 2  # + the index block + the page's script


def test_problem_filter_and_errors(runs, tmp_path, capsys):
    assert main(["view", str(runs["softmax"]), "--problem", "2", "-o", str(tmp_path / "one.html")]) == 0
    page = (tmp_path / "one.html").read_text(encoding="utf-8")
    assert re.findall(r'id="tree-0-(\d+)"', page) == ["0"] and QUESTIONS[2][0] in page
    assert main(["view", str(runs["softmax"]), "--problem", "99", "-o", str(tmp_path / "x.html")]) == 2
    assert "no tree for problem(s) 99" in capsys.readouterr().err
    assert main(["view", str(runs["softmax"]), str(runs["softmax"]), str(runs["softmax"])]) == 2
    # a reference run keeps no trees
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "answers.json").write_text("[]")
    assert main(["view", str(tmp_path / "ref"), "-o", str(tmp_path / "y.html")]) == 2
    assert "no trees/q*.json" in capsys.readouterr().err
    # two runs of different datasets are not put side by side
    other = tmp_path / "other"
    shutil.copytree(runs["softmax"], other)
    tree = json.loads((other / "trees" / "q0.json").read_text())
    tree["answer"]["question"] = "another question"
    (other / "trees" / "q0.json").write_text(json.dumps(tree))
    with pytest.raises(ViewError, match="problem 0 has another question in .*not runs of one dataset"):
        build_view([runs["softmax"], other], tmp_path / "z.html")


def test_report_links_the_tree_page_of_each_width(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(runs["softmax_costmodel"]), str(runs["softmax"]), "-o", str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    # one width, two methods: one page with both side by side
    links = re.findall(r"\[([^]]+)\]\((trees_[^)]+\.html)\)", md)
    assert links == [("REBASE width 6 vs ETS width 6", f"trees_softmax_vs_softmax_costmodel_width_{WIDTH}.html")]
    page = (out / links[0][1]).read_text(encoding="utf-8")
    assert len(re.findall(r'id="tree-[01]-\d+"', page)) == 2 * len(QUESTIONS)
    assert f"wrote {out / links[0][1]}" in capsys.readouterr().err


def test_kv_by_depth_splits_the_recorded_figure(runs, tmp_path, capsys):
    """The report's table of the KV figure by depth: each depth's part is the sum of its selection calls'
    figures over the problems, the parts add up to stats.log's figure, and the prompt's part is the
    root's tokens once a call."""
    out = tmp_path / "report"
    assert main(["report", str(runs["softmax_costmodel"]), str(runs["softmax"]), "-o", str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    table = md[md.index("KV-cache figure by depth"):].splitlines()
    assert table[2] == "| depth | REBASE width 6 | ETS width 6 |"
    cells = {row.split(" | ")[0].strip("| "): [c.strip(" |") for c in row.split(" | ")[1:]]
             for row in table[4:] if row.startswith("|")}
    for column, method in enumerate(("softmax", "softmax_costmodel")):
        by_depth, prompt, calls = {}, 0, 0
        for saved in tree_files(runs[method]):
            config = SearchConfig.from_dict(saved["fingerprint"]["config"])
            tree = Tree.from_nodes(saved["nodes"])
            for s in selections(tree, config.width, config.max_depth, config.max_tokens):
                by_depth[s.depth] = by_depth.get(s.depth, 0) + s.kv
                prompt += tree[0].num_step_tokens
                calls += 1
        stats_kv = int(re.search(r"Total KV cache size: (\d+)", (runs[method] / "stats.log").read_text()).group(1))
        assert sum(by_depth.values()) == stats_kv and len(by_depth) >= 3 and calls > len(QUESTIONS)
        for depth, kv in by_depth.items():
            assert cells[str(depth)][column] == f"{kv:,} ({100 * kv / stats_kv:.0f} %)"
        assert cells["all"][column] == f"{stats_kv:,}"
        assert cells["of it, the prompt"][column] == f"{prompt:,} ({100 * prompt / stats_kv:.0f} %)"
    capsys.readouterr()


# -- in the browser -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(runs):
    # after `runs`: Playwright's sync API keeps an event loop running, `ets run` starts its own
    reason = unavailable()
    if reason:
        pytest.skip(f"no browser, the page was not opened: {reason}")
    with chromium() as browser:
        yield browser


class Page:
    """A page opened from disk, every request it makes and every script error recorded."""

    def __init__(self, browser, path: Path):
        self.page, self.requests, self.errors = open_view(browser, path)
        self.url = path.resolve().as_uri()

    def nodes(self, run: int) -> int:
        return self.page.locator(f"svg.tree[data-run='{run}'] g.node").count()

    def index_ids(self) -> list[str]:
        return self.page.locator("#index tbody tr td:first-child").all_inner_texts()


def test_browser_draws_every_node_shows_a_step_and_fetches_nothing(browser, runs, tmp_path):
    run = runs["softmax_costmodel"]
    out, (view,) = build_view([run], tmp_path / "ets.html")
    saved = tree_files(run)
    p = Page(browser, out)
    assert p.errors == []
    assert p.page.title().startswith("ets view: ETS width 6")  # the hostile question changed nothing
    assert p.nodes(0) == len(saved[0]["nodes"])
    # another problem, picked in the index: its tree replaces the first
    p.page.locator("#index tbody tr[data-k='3']").click()
    assert p.nodes(0) == len(saved[3]["nodes"])
    assert p.page.locator("#problem h2").inner_text() == "Problem 3"
    # a node's step text, score and path
    node = max(saved[3]["nodes"], key=lambda n: n["depth"])
    p.page.locator(f"svg.tree g.node[data-id='{node['id']}']").click()
    detail = p.page.locator("#detail")
    assert node["step"].strip() in detail.inner_text()
    assert f"score {node['score']:.3f}" in detail.inner_text()
    assert detail.locator("ol li").count() == node["depth"]  # one step per depth below the root
    # the hostile question is shown as text
    last = len(QUESTIONS) - 1
    p.page.locator(f"#index tbody tr[data-k='{last}']").click()
    assert p.page.locator("#problem .question").inner_text() == HOSTILE
    # sorting by KV (largest first), then again (smallest first)
    kv = {str(r["id"]): r["kv"] for r in view.index}
    p.page.locator("#index thead th", has_text="KV").click()
    assert [kv[i] for i in p.index_ids()] == sorted(kv.values(), reverse=True)
    p.page.locator("#index thead th", has_text="KV").click()
    assert [kv[i] for i in p.index_ids()] == sorted(kv.values())
    shot = tmp_path / "ets.png"
    p.page.screenshot(path=str(shot))
    assert struct.unpack(">II", shot.read_bytes()[16:24]) == (1500, 1000)
    assert p.errors == []
    assert p.requests == [p.url]  # the page itself, nothing else


def test_browser_two_runs_side_by_side(browser, runs, tmp_path):
    out, (ets, rebase) = build_view([runs["softmax_costmodel"], runs["softmax"]], tmp_path / "both.html")
    p = Page(browser, out)
    assert p.nodes(0) == ets.index[0]["nodes"] and p.nodes(1) == rebase.index[0]["nodes"]
    # the per-depth KV comparison: one row per depth either run selected at
    depths = max(len(ets.trees[0]["selections"]), len(rebase.trees[0]["selections"]))
    assert p.page.locator(".compare table").nth(1).locator("tbody tr").count() == depths
    # the filter: problems only one run gets right (by the weighted vote)
    only_a = [str(a["id"]) for a, b in zip(ets.index, rebase.index) if a["wmv"] and not b["wmv"]]
    only_one = [str(a["id"]) for a, b in zip(ets.index, rebase.index) if a["wmv"] != b["wmv"]]
    p.page.select_option("#filter", "only0")
    assert p.index_ids() == only_a
    p.page.select_option("#filter", "onlyone")
    assert p.index_ids() == only_one
    p.page.screenshot(path=str(tmp_path / "both.png"))
    assert p.errors == []
    assert p.requests == [p.url]
