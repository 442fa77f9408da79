"""The README: its Python API example runs as written, it reads in ten minutes, its results table quotes
docs/results.md, and no file of the repository names a machine's absolute path."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_python_api_example_runs(monkeypatch):
    block = re.search(r"## Python API\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert len(result.answers) == 16  # width 16: every trajectory answers at its third step
    assert all(a["step_scores"] == pytest.approx([0.8, 0.7, 0.6]) for a in result.answers)
    assert sum(namespace["allocate"]("softmax", namespace["tree"], namespace["candidate_ids"], 16, {}).values()) == 16


README = (ROOT / "README.md").read_text(encoding="utf-8")
# absolute paths of some machine: a checkout, a home folder (written so that this file does not match itself)
MACHINE_PATH = re.compile(r"/(?:work|root|Users)/|/home/[a-z_][\w-]*/")


def test_the_readme_reads_in_ten_minutes():
    assert len(README.splitlines()) <= 300


def test_every_figure_of_the_results_table_is_on_the_results_page():
    """The README's one table quotes docs/results.md: each number in it stands on that page."""
    table = README.split("<!-- results: taken from docs/results.md -->", 1)[1].split("\n\n", 1)[0]
    figures = re.findall(r"(?<![\w.])[+-]?\d+(?:\.\d+)?x?(?![\w.])", table)  # not the digits of a name
    assert len(figures) >= 6
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    missing = [f for f in figures if f not in page]
    assert not missing, f"README figures not on docs/results.md: {missing}"


def test_no_file_names_a_machines_absolute_path():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in tracked:
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary, or deleted in the working tree
        found += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1)
                  if MACHINE_PATH.search(line) and Path(name) != Path(__file__).relative_to(ROOT)]
    assert not found, found
