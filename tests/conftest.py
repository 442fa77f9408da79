"""What the tests share.

pytest puts this directory on ``sys.path`` (``pythonpath`` in pyproject.toml), so
the helper modules beside the tests import by name::

    from standins.servers import StandinServer, free_port, run

and the fixtures below reach the files that are not modules.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

TESTS = Path(__file__).parent


@pytest.fixture(scope="session")
def scripted_world() -> SimpleNamespace:
    """The deterministic policy and PRM the reference's whole-search cases were made with
    (``data/scripted_world.py``, as the golden cases ship it): ``step_fn``, ``score_fn``, ``token_fn``."""
    return SimpleNamespace(**runpy.run_path(str(TESTS / "data" / "scripted_world.py")))


@pytest.fixture(scope="session")
def standin_script() -> Path:
    """The stand-in servers as a script, for tests that run one in its own process
    (``python servers.py --kind openai --port N``)."""
    return TESTS / "standins" / "servers.py"
