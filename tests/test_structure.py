"""The package's shape (DESIGN.md §2): no import cycles, small modules, and the request
globals of Flask touched only where the design allows them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_toucan"
MODULES = {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}
MAX_LINES = 300
#: The modules that may read Flask's current_app / g / request: the facade, the HTTP
#: side (views, the embed pages), the template globals mixed into the facade, the CLI.
CONTEXT_MODULES = {"extension", "views", "pages", "templating", "cli"}


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports at import time (not under TYPE_CHECKING,
    not inside functions)."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in tree.body:  # module level only: lazy imports cannot make a cycle at import
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[0])
    return found & MODULES.keys()


def test_the_package_modules_are_found() -> None:
    assert {"extension", "cache", "coordination", "client", "identity", "tokens"} <= set(MODULES)
    assert imports_of("extension") >= {"state", "views", "settings"}


def test_no_import_cycles() -> None:
    graph = {name: imports_of(name) - {name} for name in MODULES if name != "__init__"}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dependency in sorted(graph.get(name, ())):
            visit(dependency, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_at_most_300_lines(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"flask_toucan/{name}.py has {lines} lines"


@pytest.mark.parametrize("name", sorted(set(MODULES) - CONTEXT_MODULES))
def test_request_globals_stay_in_the_context_modules(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "flask":
            used = {alias.name for alias in node.names} & {"current_app", "g", "request"}
            assert not used, f"flask_toucan/{name}.py imports {sorted(used)} from flask"
