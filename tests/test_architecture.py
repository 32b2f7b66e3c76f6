"""The package's shape: no import cycles, no import of the package from inside it, and imports
inside functions only for optional dependencies. The layer contracts themselves are checked by
``lint-imports`` (pyproject.toml, ``[tool.importlinter]``); these are the rules it cannot state."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "resilient"

# Third-party packages that are extras (or heavy enough to load only when used): the only modules a
# function body may import. Everything of the package itself is imported at module level.
OPTIONAL = {
    "asyncpg",
    "hypothesis",
    "limits",  # a core dependency, but its storage layer is slow to import and rarely needed
    "opentelemetry",
    "prometheus_client",
    "pytest",
    "pytest_asyncio",
    "redis",
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "websockets",
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                ids.add(id(sub))
    return ids


def _imports_in_functions(tree: ast.AST) -> list[tuple[int, str]]:
    skipped = _type_checking_blocks(tree)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if id(child) in skipped:
                continue
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((child.lineno, "." * child.level + (child.module or "")))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("resilient", exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w == "resilient":
                continue  # a submodule's own package is imported first by Python itself
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in modules:
        if module not in index:
            strongconnect(module)
    assert cycles == []


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_no_module_imports_the_package_root(module: str, path: Path) -> None:
    if module == "resilient":
        return
    tree = ast.parse(path.read_text())
    offenders = [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(a.name == "resilient" for a in node.names))
        or (
            isinstance(node, ast.ImportFrom)
            and ((node.level == 0 and node.module == "resilient") or _relative_root(module, node))
            and not all(_is_submodule(a.name) for a in node.names)
        )
    ]
    assert offenders == [], f"{path.name} imports the package root at lines {offenders}"


def _is_submodule(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def _relative_root(module: str, node: ast.ImportFrom) -> bool:
    if node.level == 0 or node.module:
        return False
    depth = module.count(".") + (1 if module.endswith("__init__") else 0)
    return node.level >= depth


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_function_level_imports_are_only_for_optional_dependencies(module: str, path: Path) -> None:
    tree = ast.parse(path.read_text())
    wrong = [
        (line, name)
        for line, name in _imports_in_functions(tree)
        if name.split(".")[0] not in OPTIONAL | sys.stdlib_module_names
    ]
    assert wrong == [], f"{module}: imports inside functions {wrong}"


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_pybreaker_is_imported_only_through_its_loader(module: str, path: Path) -> None:
    """pybreaker imports redis at its top; the loader keeps ``import resilient`` free of it."""
    if module == "resilient._core.pybreaker_import":
        return
    tree = ast.parse(path.read_text())
    direct = [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(a.name == "pybreaker" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "pybreaker")
    ]
    assert direct == [], f"{module} imports pybreaker directly at lines {direct}"
