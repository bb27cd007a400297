"""The package's shape (DESIGN.md §2): no import cycles (function-level imports included),
calls that flow one way, and the request globals of Flask touched only on the request side."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_toucan"
MODULES = {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}
#: The modules that may read Flask's current_app / g / request: the request side.
CONTEXT_MODULES = {"context", "extension", "views", "cli"}


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (never run: no dependency)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere: at module level or inside a
    function (a lazy import is still a dependency), but not under TYPE_CHECKING."""
    tree = ast.parse(MODULES[name].read_text())
    skipped = _type_checking_blocks(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flask_toucan."):
            found.add((node.module or "").split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("flask_toucan."):
                    found.add(alias.name.split(".")[1])
    return found & MODULES.keys()


def test_the_package_modules_are_found() -> None:
    assert {"extension", "service", "cache", "client", "identity", "tokens"} <= set(MODULES)
    assert imports_of("extension") >= {"service", "views", "settings"}


def test_function_level_and_type_checking_imports_are_told_apart(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .extension import Toucan\n"
        "def f():\n    from .service import TokenService\n"
    )
    MODULES["_probe"] = tmp_path / "_probe.py"
    MODULES["_probe"].write_text(source)
    try:
        assert imports_of("_probe") == {"service"}
    finally:
        del MODULES["_probe"]


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        # The service, storage, minters and values never reach up to the request side.
        (name, upper)
        for name in ("service", "cache", "client", "preview", "identity", "tokens", "variants")
        for upper in ("context", "extension", "views", "cli")
    ]
    + [("cache", "service"), ("client", "service"), ("identity", "service")]
    # The request side never reaches up to the set-up or the HTTP side.
    + [("context", "extension"), ("context", "views"), ("context", "cli")],
)
def test_calls_flow_one_way(lower: str, upper: str) -> None:
    assert upper not in imports_of(lower), f"flask_toucan/{lower}.py imports {upper}"


def test_the_token_path_has_one_owner() -> None:
    # Nobody but the service (and the CLI's doctor, which probes a minter on purpose)
    # talks to minters or storage directly.
    for name in set(MODULES) - {"service", "__init__", "doctor"}:
        assert "client" not in imports_of(name), name
    assert "service" in imports_of("extension")
    assert not imports_of("views") & {"service", "cache", "client", "extension"}


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


@pytest.mark.parametrize("name", sorted(set(MODULES) - CONTEXT_MODULES))
def test_request_globals_stay_in_the_context_modules(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "flask":
            used = {alias.name for alias in node.names} & {"current_app", "g", "request"}
            assert not used, f"flask_toucan/{name}.py imports {sorted(used)} from flask"
