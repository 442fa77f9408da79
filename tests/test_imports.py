"""The import graph of ``src/ets`` has no cycle.

Every ``import`` / ``from ... import`` in a module counts, wherever it sits (module level, inside a
function, under ``if TYPE_CHECKING``): one inside a function still runs, just later, and a cycle
through it is a cycle in the design even when the late import keeps it from failing at load time.
Imports made by name at run time (``importlib.import_module``) are not seen.

An edge from ``m`` to ``ets.a.b`` also goes to each package ``ets.a.b`` sits in, as importing a
submodule runs its packages' ``__init__`` first -- except the packages ``m`` itself sits in, whose
``__init__`` has already started before ``m`` could run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "ets"


def module_names(src: Path = SRC) -> dict[str, Path]:
    """Each module of the package by dotted name; a package's ``__init__.py`` is the package."""
    modules = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _packages(name: str) -> list[str]:
    """The packages ``name`` sits in, outermost first: ``a.b.c`` -> ``[a, a.b]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package-internal modules the module ``name`` (at ``path``) imports."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # `from pkg import name` imports the submodule pkg.name when there is one
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
    own_packages = set(_packages(name)) | ({name} if is_package else set())
    edges = set()
    for target in targets & modules.keys():  # not the standard library's or other packages'
        edges.update(p for p in [*_packages(target), target] if p not in own_packages and p != name)
    return edges


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = module_names(src)
    return {name: imported(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(v: str) -> None:  # Tarjan's algorithm; the graph is a few dozen nodes
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search."""
    start = min(component)
    came_from = {start: ""}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while came_from[path[-1]]:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # unreachable: a component of 2+ has one


def test_the_walk_resolves_every_kind_of_import(tmp_path):
    files = {
        "__init__.py": "from ets.a import thing\n",
        "a/__init__.py": "from . import b\nthing = 1\n",
        "a/b.py": "from .c import f\nfrom ..d import g\n",
        "a/c.py": "def f():\n    import ets.e.x  # inside a function\n",
        "d.py": "from ets.a import thing, b as bee\nimport json\n",
        "e/__init__.py": "",
        "e/x.py": "",
    }
    for name, text in files.items():
        (tmp_path / PACKAGE / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / PACKAGE / name).write_text(text)
    assert import_graph(tmp_path) == {
        "ets": {"ets.a"},  # `from ets.a import thing`: a name, not a module
        "ets.a": {"ets.a.b"},  # `from . import b`: the submodule
        "ets.a.b": {"ets.a.c", "ets.d"},  # relative, one and two levels up; ets.a is already running
        "ets.a.c": {"ets.e", "ets.e.x"},  # inside a function; the package ets.e runs first
        "ets.d": {"ets.a", "ets.a.b"},  # `import json` is not ours
        "ets.e": set(),
        "ets.e.x": set(),
    }


def test_the_walk_sees_the_real_tree():
    graph = import_graph()
    assert "ets.backends.http" in graph["ets.backends.factory"]  # imported inside a function
    assert "ets.view" in graph["ets.evaluate.report"]  # it imports ets.view.data, whose package runs first


def test_cycle_finder_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["e", "e2", "e"]]


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/ets:\n" + "\n".join(" -> ".join(c) for c in cycles)
