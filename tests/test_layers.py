"""The layering of ``fame/``: every arrow points one way (``docs/architecture.md``).

The import graph is built from the source with :mod:`ast`: every ``import``
and ``from ... import`` anywhere in a module (module level, inside
functions, under ``if TYPE_CHECKING:``), relative or absolute. A type-only
import is a dependency too: it is how an upward arrow starts.

The layers, bottom to top, and what each may import besides itself::

    _core      nothing of fame
    _wire      _core
    _protocol  _wire, _core
    _storage   _wire, _core
    _agents    _protocol, _wire, _core
    _fabric    _agents, _protocol, _wire, _core
    public     every layer but _cli  (fame, fame.errors, fame.storage, fame.lowlevel)
    _cli       the public modules only

No module imports, through others, a module that imports it (inside a
layer either). A new circle, an upward import or a private import from the
command line fails here, naming the file, the line and the import. Only
the backend, ``fame/_storage/_sqlcipher_*.py``, imports ``sqlcipher3``, and the
library never imports the example ``agents`` package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fame"
PUBLIC = "public"
LAYERS = ("_core", "_wire", "_protocol", "_storage", "_agents", "_fabric", "_cli")
ALLOWED: dict[str, set[str]] = {
    "_core": set(),
    "_wire": {"_core"},
    "_protocol": {"_wire", "_core"},
    "_storage": {"_wire", "_core"},
    "_agents": {"_protocol", "_wire", "_core"},
    "_fabric": {"_agents", "_protocol", "_wire", "_core"},
    PUBLIC: {"_core", "_wire", "_protocol", "_storage", "_agents", "_fabric"},
    "_cli": {PUBLIC},
}
SQLCIPHER_PREFIX = "fame._storage._sqlcipher_"
"""The SQLCipher backend: the modules named ``_sqlcipher_*`` of ``fame/_storage``."""

# Imports that break the rules above and are known, each with the reason it is
# still there: (importing module, imported module). Empty is the goal; an entry
# whose import is gone fails the test too, so the list only ever shrinks.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: ``source`` imports ``target`` at ``line``."""

    source: str
    target: str
    line: int
    path: Path

    def __str__(self) -> str:
        return (
            f"{self.path.relative_to(PACKAGE.parent)}:{self.line}: {self.source} -> {self.target}"
        )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (its ``from`` part)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: str, path: Path) -> Iterator[Import]:
    """Every module ``module`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, path)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            for alias in node.names:
                # ``from pkg import mod`` depends on the module pkg.mod when there is one.
                candidate = f"{base}.{alias.name}"
                yield Import(module, candidate if candidate in MODULES else base, node.lineno, path)


IMPORTS = sorted(
    {found for module, path in MODULES.items() for found in imports_of(module, path)},
    key=lambda found: (found.source, found.line, found.target),
)


def layer_of(module: str) -> str | None:
    """The layer of a module of fame (``public`` for the public ones); None outside fame."""
    parts = module.split(".")
    if parts[0] != "fame":
        return None
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return PUBLIC


def crossing_imports() -> Iterator[tuple[Import, str, str]]:
    """Every import from one layer into another: (import, from layer, to layer)."""
    for found in IMPORTS:
        source, target = layer_of(found.source), layer_of(found.target)
        if source is not None and target is not None and source != target:
            yield found, source, target


def _known(found: Import) -> bool:
    return (found.source, found.target) in KNOWN_EXCEPTIONS


def test_the_graph_sees_every_kind_of_import() -> None:
    """The parser itself works: relative, absolute, function-level and type-only imports."""
    edges = {(found.source, found.target) for found in IMPORTS}
    assert ("fame", "fame._agents._node") in edges  # relative, module level
    assert len(MODULES) > 30
    assert any(found.source.startswith("fame._cli") for found in IMPORTS)
    sample = PACKAGE / "_agents" / "_fake.py"
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .._core import _errors\n"
        "from . import _node\n"
        "import fame._wire._schema\n"
        "if TYPE_CHECKING:\n"
        "    from ..lowlevel import Actor\n"
        "def f():\n"
        "    from .._fabric._client import connect\n"
    )
    tree_imports = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            tree_imports.add(_resolve("fame._agents._fake", sample, node))
        elif isinstance(node, ast.Import):
            tree_imports.update(alias.name for alias in node.names)
    assert tree_imports == {
        "typing",
        "fame._core",
        "fame._agents",
        "fame._wire._schema",
        "fame.lowlevel",
        "fame._fabric._client",
    }


def test_no_circle_between_layers() -> None:
    graph: dict[str, set[str]] = {}
    for found, source, target in crossing_imports():
        if not _known(found):
            graph.setdefault(source, set()).add(target)
    circles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            layer, trail = stack.pop()
            for following in graph.get(layer, ()):
                if following == start:
                    circles.append(" -> ".join([*trail, start]))
                elif following not in trail:
                    stack.append((following, [*trail, following]))
    assert not circles, "circles between layers:\n" + "\n".join(sorted(set(circles)))


def test_no_circle_between_modules() -> None:
    """Inside a layer too: no module imports, through others, a module that imports it."""
    graph: dict[str, set[str]] = {}
    for found in IMPORTS:
        if found.target in MODULES and found.target != found.source:
            graph.setdefault(found.source, set()).add(found.target)
    done: set[str] = set()
    circles: list[str] = []

    def visit(module: str, trail: list[str]) -> None:
        for following in sorted(graph.get(module, ())):
            if following in trail:
                circles.append(" -> ".join([*trail[trail.index(following) :], following]))
            elif following not in done:
                visit(following, [*trail, following])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not circles, "circles between modules:\n" + "\n".join(circles)


def test_every_import_between_layers_points_down() -> None:
    upward = [
        str(found)
        for found, source, target in crossing_imports()
        if source != "_cli" and target not in ALLOWED[source] and not _known(found)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_command_line_uses_only_the_public_api() -> None:
    private = [
        str(found)
        for found, source, target in crossing_imports()
        if source == "_cli" and target != PUBLIC and not _known(found)
    ]
    assert not private, "private imports in the command line:\n" + "\n".join(private)


def test_only_the_storage_backend_imports_sqlcipher() -> None:
    importers = {found.source for found in IMPORTS if found.target.split(".")[0] == "sqlcipher3"}
    assert importers, "nothing imports sqlcipher3: has the backend moved?"
    assert all(name.startswith(SQLCIPHER_PREFIX) for name in importers), sorted(importers)


def test_only_the_postgres_backend_imports_psycopg() -> None:
    importers = {
        found.source
        for found in IMPORTS
        if found.target.split(".")[0] in ("psycopg", "psycopg_pool")
    }
    assert importers == {"fame._storage._postgres_backend"}, sorted(importers)


def test_the_library_never_imports_the_example_agents() -> None:
    example = [str(found) for found in IMPORTS if found.target.split(".")[0] == "agents"]
    assert not example, "imports of the example:\n" + "\n".join(example)


def test_every_known_exception_is_still_needed() -> None:
    """A fixed violation leaves the allowance list, so that it cannot come back unseen."""
    crossing = {
        (found.source, found.target)
        for found, source, target in crossing_imports()
        if target not in ALLOWED[source]
    }
    assert KNOWN_EXCEPTIONS - crossing == set()
