"""The architecture of docs/architecture.rst, checked: adapters over one domain, a leaf
for the per-app state, no import cycle, domain modules small enough to read at once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_obitox"
#: The modules that speak a protocol and call the domain; none may touch the state.
ADAPTERS = ("views.py", "companion.py", "cli.py", "jobs.py", "http.py", "storage_events.py")
DOMAIN_MODULE_MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package ``name`` imports, at any level of the file (imports
    under ``if TYPE_CHECKING:`` excluded: they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_package else name.split(".")[:-1]
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{alias.name}" for alias in node.names]
            # ``from . import x`` loads the submodule x; its package is already loading.
            candidates = subs if node.module is None else [target, *subs]
            found.update(c for c in candidates if c in modules and c != name)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert sum(map(len, graph.values())) > 100  # the walk really found the imports
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_per_app_state_is_a_leaf() -> None:
    modules = _modules()
    leaf = _imports("flask_obitox.appstate", modules["flask_obitox.appstate"], modules)
    assert leaf == set()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_never_touch_the_state_backend(adapter: str) -> None:
    tree = ast.parse((PACKAGE / adapter).read_text(encoding="utf-8"))
    touching = [
        f"{adapter}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("state", "storages")
    ]
    assert touching == []


def test_domain_modules_read_in_one_sitting() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in (PACKAGE / "domain").glob("*.py")
    }
    assert {"signing.py", "multipart.py", "settling.py", "cleanup.py"} <= set(sizes)
    assert {name: n for name, n in sizes.items() if n > DOMAIN_MODULE_MAX_LINES} == {}
