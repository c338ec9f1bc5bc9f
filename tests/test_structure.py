"""The layout rules of STYLE.md, checked statically with ``ast``: the floors chgdata/ (physics, store) < pipelines/
and models/ < app/ (workflows) < cli/, the bottom importing nothing above it; the data commands of the CLI reach
the pipelines only through the workflows layer, whose functions mirror their options; no import circles (function-
level imports included), no module over 550 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: installed import prefix of each top-level source folder (pyproject.toml ``package-dir``)
PACKAGES = {"chgdata": "chgdata", "pipelines": "chgdata.pipelines", "models": "chgdata.models", "app": "chgdata.app",
            "cli": "chgdata.cli"}
ABOVE_THE_BOTTOM = ("chgdata.pipelines", "chgdata.models", "chgdata.app", "chgdata.cli")
#: the CLI calls chgdata.app only, never the pipelines or models themselves
MAX_LINES = 400


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
    assert "chgdata.models.train" in graph["chgdata.app.models"]  # a function-level import
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_bottom_imports_nothing_above_it():
    """chgdata/ imports neither the pipelines, the models, the workflows nor the CLI (chgdata/__init__.py and
    __main__.py re-export the workflows lazily and start the CLI: by name, not by import statement)."""
    graph = _graph()
    physics = [m for m, p in _modules().items() if p.is_relative_to(REPO / "chgdata")]
    bad = {m: sorted(t for t in graph[m] if t.startswith(ABOVE_THE_BOTTOM)) for m in physics}
    bad = {m: ts for m, ts in bad.items() if ts and m not in ("chgdata", "chgdata.__main__")}
    assert not bad, f"chgdata/ modules import the floors above: {bad}"
    assert not _graph()["chgdata"] & {"chgdata.pipelines", "chgdata.models"}


def test_the_cli_goes_through_the_workflows_layer():
    graph = _graph()
    cli = [m for m in graph if m.startswith("chgdata.cli")]
    bad = {m: sorted(t for t in graph[m] if t.startswith(("chgdata.pipelines", "chgdata.models"))) for m in cli}
    assert not {m: ts for m, ts in bad.items() if ts}, bad
    assert sum("chgdata.app" in graph[m] for m in cli) >= 12


def _cli_params(command: str) -> dict[str, object]:
    """A command's parameters and their defaults, read from the typer app."""
    import inspect

    from chgdata.cli.main import app

    (cmd,) = [c for c in app.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == command]
    out = {}
    for name, p in inspect.signature(cmd.callback).parameters.items():
        default = p.default
        out[name] = getattr(default, "default", default)
    return out


@pytest.mark.parametrize("command, function, cli_only, renamed", [
    ("ingest", "ingest", {"mp_ids_file", "quiet"}, {}),
    ("split", "split", set(), {"seed": "split_seed"}),
    ("build-delta", "build_delta", {"quiet"}, {}),
    ("build-dos", "build_dos", {"quiet"}, {}),
    ("run", "run", {"quiet"}, {}),
    ("verify", "verify", {"limit"}, {}),
    ("evaluate", "evaluate", {"quiet"}, {"out_path": "out"}),
    ("fit-dos", "fit_dos", set(), {"out_path": "out"}),
    ("predict", "predict_files", {"quiet"}, {"out_dir": "out", "conserve": "conserve_electrons"}),
    ("ensemble", "ensemble", set(), {"out_path": "out"}),
    ("rebuild", "rebuild", set(), {}),
])
def test_every_data_option_has_its_api_twin_with_the_same_default(command, function, cli_only, renamed):
    """Walk the typer app: each option of a data command is a parameter of its chgdata.app function with the same
    default (the store's default lives in the CLI only: the API takes it positionally); ``--quiet`` is
    ``progress`` inverted, and the files/printing options are the CLI's."""
    import inspect

    import chgdata.app

    api = inspect.signature(getattr(chgdata.app, function)).parameters
    missing, differ = [], []
    for name, default in _cli_params(command).items():
        if name in cli_only:
            continue
        twin = renamed.get(name, name)
        if twin not in api:
            missing.append(name)
        else:
            want = api[twin].default
            if isinstance(default, str) and isinstance(want, tuple):  # a comma list on the command line
                default = tuple(type(want[0])(v) for v in default.split(","))
            if isinstance(default, Path) or isinstance(want, Path):  # a path given as text or as a Path
                default, want = str(default), str(want)
            if name != "store" and want != (default if default is not ... else inspect.Parameter.empty):
                differ.append((name, default, want))
    assert not missing and not differ, (missing, differ)
    if "quiet" in cli_only:
        assert "progress" in api


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_limit():
    long = {str(p.relative_to(REPO)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_train_option_is_a_train_config_field():
    """``chgdata train``'s flags are TrainConfig fields (the API's ``train_config(**options)``; --ema is
    ``ema_decay``, --out ``out``) or parameters of chgdata.app.train_config itself; none is the CLI's alone."""
    import dataclasses
    import inspect

    import chgdata.app
    from chgdata.models.train_config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    own = set(inspect.signature(chgdata.app.train_config).parameters) - {"options"}
    renamed = {"ema": "ema_decay", "run_dir": "out"}
    orphans = [n for n in _cli_params("train") if n != "quiet" and renamed.get(n, n) not in fields | own]
    assert not orphans, orphans
