"""Dependencies point one way (STYLE.md): read from the source with `ast`, nothing imported.

- `models/` imports neither `app` nor `worker`, nor a web, database or queue library;
- `app/core` (what the API and the worker share) imports no HTTP layer: not `app.api`,
  `app.web`, `app.cli`, FastAPI or Starlette;
- nothing in `app/` imports `worker/` (the API enqueues by task name);
- `worker/` imports `app.core` and `models`, never `app.api`, `app.web` or `app.cli`;
- importing a module of `app/` loads no torch, directly or through the modules it imports at
  module level, except the modules named in `TORCH_MODULES`, which nothing in `app/` imports
  at module level.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "worker", "models")

# (importer, what it must not import): a name matches itself and everything below it
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("models", ("app", "worker", "fastapi", "starlette", "sqlalchemy", "celery", "pydantic")),
    ("app.core", ("app.api", "app.web", "app.cli", "fastapi", "starlette")),
    ("app", ("worker",)),
    ("worker", ("app.api", "app.web", "app.cli")),
]
TORCH = ("torch", "torchvision")
# the modules of app/ that use torch, each imported only inside the functions that need it:
# the sample generator of the API, and the sinks of `sngan demo` (a TrainerSinks subclass)
TORCH_MODULES = frozenset({"app.api.services.generation", "app.cli.demo_progress"})


@dataclass(frozen=True)
class Import:
    name: str  # dotted, absolute; for `from a import b` also `a.b` (b may be a module)
    line: int
    module_level: bool  # runs when the importing module is imported


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in `source` (the module `module`). Module-level ones are those outside
    function bodies and outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            level = module_level
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                level = False
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:  # typing only: never runs
                    visit_stmt(stmt, False)
                for stmt in child.orelse:
                    visit_stmt(stmt, module_level)
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, child.lineno, level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child, package)
                found.append(Import(base, child.lineno, level))
                found.extend(Import(f"{base}.{a.name}", child.lineno, level) for a in child.names)
            visit(child, level)

    def visit_stmt(stmt: ast.stmt, module_level: bool) -> None:
        wrapper = ast.Module(body=[stmt], type_ignores=[])
        visit(wrapper, module_level)

    visit(tree, True)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _sources() -> dict[str, Path]:
    found = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            found[module_name(path)] = path
    return found


SOURCES = _sources()
IMPORTS = {
    name: imports_of(path.read_text(), name, path.name == "__init__.py")
    for name, path in SOURCES.items()
}


def _violations(importer: str, forbidden: tuple[str, ...]) -> Iterator[str]:
    for name, found in IMPORTS.items():
        if not _within(name, importer):
            continue
        for imp in found:
            if any(_within(imp.name, f) for f in forbidden):
                yield f"{SOURCES[name].relative_to(ROOT)}:{imp.line} imports {imp.name}"


@pytest.mark.parametrize(("importer", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_dependencies_point_one_way(importer: str, forbidden: tuple[str, ...]) -> None:
    assert sorted(set(_violations(importer, forbidden))) == []


def _loaded_with(module: str) -> dict[str, str]:
    """What importing `module` loads: {module or third-party name: the chain that loads it},
    following the module-level imports through this repository's modules."""
    chains = {module: module}
    todo = [module]
    while todo:
        current = todo.pop()
        for imp in IMPORTS.get(current, []):
            if not imp.module_level:
                continue
            for name in _modules_named(imp.name):
                if name not in chains:
                    chains[name] = f"{chains[current]} -> {name}"
                    todo.append(name)
    return chains


def _modules_named(name: str) -> list[str]:
    """The modules an import of `name` runs: each package above it, and the module itself
    (or, outside this repository, its top-level name)."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return [parts[0]]
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [p for p in prefixes if p in SOURCES]


APP_MODULES = sorted(name for name in SOURCES if _within(name, "app"))


@pytest.mark.parametrize("module", APP_MODULES)
def test_importing_app_loads_no_torch(module: str) -> None:
    if module in TORCH_MODULES:
        return
    loaded = _loaded_with(module)
    assert [loaded[t] for t in TORCH if t in loaded] == []
    # a torch module imported at module level would bring torch with it
    assert [loaded[m] for m in TORCH_MODULES if m in loaded] == []


def test_the_torch_modules_exist() -> None:
    assert set(SOURCES) >= TORCH_MODULES


def test_the_reader_tells_module_level_imports_apart() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import torch.nn\n"
        "from . import sibling\n"
        "from ..core import leases as l\n"
        "if TYPE_CHECKING:\n"
        "    import worker\n"
        "else:\n"
        "    import numpy\n"
        "class C:\n"
        "    import json\n"
        "    def f(self):\n"
        "        import celery\n"
        "try:\n"
        "    import yaml\n"
        "except ImportError:\n"
        "    pass\n"
    )
    found = {(i.name, i.module_level) for i in imports_of(source, "app.api.x")}
    assert {n for n, level in found if level} == {
        "typing",
        "typing.TYPE_CHECKING",
        "torch.nn",
        "app.api",
        "app.api.sibling",
        "app.core",
        "app.core.leases",
        "numpy",
        "json",
        "yaml",
    }
    assert {n for n, level in found if not level} == {"worker", "celery"}
    assert _modules_named("app.core.leases.Lease") == ["app", "app.core", "app.core.leases"]
    assert _modules_named("torch.nn") == ["torch"]
