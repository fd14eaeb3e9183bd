"""The library reads no environment and writes nothing to the terminal.

Everything in ``fame/`` except the command-line programs (``fame/_cli/``) is
library code: it takes its configuration as arguments and logs through
``logging``, so an embedding program decides what is configured and where
output goes. This test reads the syntax tree of every library module and
fails on an environment read (``os.environ``, ``os.getenv``, ...), on
``print``, and on writing to ``sys.stdout`` / ``sys.stderr``. Docstrings may
still show ``print`` in examples: they are strings, not calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fame

PACKAGE = Path(fame.__file__).parent
EDGE = PACKAGE / "_cli"  # the one place that reads FAME_* and prints

OS_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
SYS_STREAMS = {"stdout", "stderr", "__stdout__", "__stderr__"}


def library_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if EDGE not in path.parents)


def offences(tree: ast.AST) -> list[str]:
    """What ``tree`` does that library code must not, each as ``line: what``."""
    found: list[str] = []
    os_names, sys_names, banned = {"os"}, {"sys"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "os":
                    os_names.add(alias.asname or "os")
                elif alias.name == "sys":
                    sys_names.add(alias.asname or "sys")
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "sys"):
            bad = OS_ENVIRONMENT if node.module == "os" else SYS_STREAMS
            for alias in node.names:
                if alias.name in bad:
                    banned.add(alias.asname or alias.name)
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, name = node.value.id, node.attr
            environment = owner in os_names and name in OS_ENVIRONMENT
            if environment or (owner in sys_names and name in SYS_STREAMS):
                found.append(f"{node.lineno}: {owner}.{name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "print":
                found.append(f"{node.lineno}: print()")
            elif node.func.id in banned:
                found.append(f"{node.lineno}: {node.func.id}()")
    return sorted(found, key=lambda text: int(text.split(":")[0]))


def test_library_code_reads_no_environment_and_does_not_print() -> None:
    modules = library_modules()
    assert len(modules) > 20, modules  # the scan really sees the package
    report = {
        str(path.relative_to(PACKAGE.parent)): found
        for path in modules
        if (found := offences(ast.parse(path.read_text(encoding="utf-8"), str(path))))
    }
    assert report == {}


def test_the_scan_finds_each_kind_of_offence() -> None:
    source = '''
import os
import sys as system
from os import getenv as ge
"""print("in a docstring is fine")"""

def f():
    print("x")
    os.environ.get("FAME_X")
    system.stderr.write("y")
    ge("FAME_Y")
    return os.getenv("FAME_Z")
'''
    assert offences(ast.parse(source)) == [
        "4: from os import getenv",
        "8: print()",
        "9: os.environ",
        "10: system.stderr",
        "11: ge()",
        "12: os.getenv",
    ]
