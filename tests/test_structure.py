"""The layout rules of STYLE.md, checked statically with ``ast``: physics (``chgdata/``) never imports the Dask
pipelines, no import circles among the project's modules (function-level imports included), no module over 550
lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: installed import prefix of each top-level source folder (pyproject.toml ``package-dir``)
PACKAGES = {"chgdata": "chgdata", "pipelines": "chgdata.pipelines", "models": "chgdata.models", "cli": "chgdata.cli"}
#: the Python API facade mirrors the CLI, so it sits above every layer and may call the pipelines and models
FACADE = {"chgdata.api"}
MAX_LINES = 550


def _modules() -> dict[str, Path]:
    """Dotted installed name -> source file, for every .py of the four source folders."""
    out = {}
    for folder, prefix in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its body (module level, function level and
    ``TYPE_CHECKING`` blocks), each resolved to the most specific known module (``from pkg import mod`` gives
    ``pkg.mod``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" for a in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
                break
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {name: _imports(name, path, known) for name, path in mods.items()}
    # A package's own __init__ re-exporting its modules is not a circle: drop edges from a package to its children.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def test_graph_sees_known_imports():
    """The checker itself: resolves absolute, relative and function-level imports, and finds a planted cycle."""
    graph = _graph()
    assert "chgdata.store" in graph["chgdata.verify"]
    assert "chgdata.models.train" in graph["chgdata.cli.train"]  # a function-level import in the CLI
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_physics_does_not_import_pipelines():
    graph = _graph()
    physics = [m for m, p in _modules().items() if p.is_relative_to(REPO / "chgdata") and m not in FACADE]
    bad = {m: sorted(t for t in graph[m] if t.startswith("chgdata.pipelines")) for m in physics}
    bad = {m: ts for m, ts in bad.items() if ts}
    assert not bad, f"chgdata/ modules import the pipelines: {bad}"


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_limit():
    long = {str(p.relative_to(REPO)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
