"""What a run directory says about itself, for ``ets evaluate``, ``ets report`` and ``ets view``:
its ``run.json``, the prompt format its answers are read in, and its name in a table or a page.

Here, below both :mod:`ets.evaluate.report` and :mod:`ets.view`, so that the report can build the
runs' tree pages while the viewer reads runs the same way the report does.
"""

from __future__ import annotations

import json
from pathlib import Path


class ReportError(ValueError):
    """A run directory that cannot be read; the message names the path."""


METHOD_LABELS = {
    "softmax_costmodel": "ETS",
    "softmax": "REBASE",
    "beam_search": "beam search",
    "dvts": "DVTS",
    "best_of_n": "best-of-N",
}


def run_label(method: str, width: int | None, temperature: float | None = None) -> str:
    """"ETS width 16": a run's method, by its common name, and its width; "greedy" for one sample at
    temperature 0."""
    if method == "best_of_n" and width == 1 and temperature == 0:
        return "greedy"
    label = METHOD_LABELS.get(method, method)
    return label if width is None else f"{label} width {width}"


def model_type_of(config: dict) -> str:
    """The prompt format a run's answers are read in: ``run.json``'s config
    (``prompt_format``, else ``policy_model_type``), else llemma as the reference."""
    return config.get("prompt_format") or config.get("policy_model_type") or "llemma"


def read_run_json(run_dir: Path) -> dict:
    """A run directory's ``run.json`` as written by ``ets run``; ``{}`` when it has none (a reference run)."""
    run_json_path = run_dir / "run.json"
    if not run_json_path.is_file():
        return {}
    try:
        run_json = json.loads(run_json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{run_json_path}: not valid JSON ({exc})") from None
    if not isinstance(run_json, dict):
        raise ReportError(f"{run_json_path}: expected a JSON object with 'config' and 'stats'")
    return run_json
