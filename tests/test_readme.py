"""The README's Python API example runs as written, from the repository root."""

import re
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
