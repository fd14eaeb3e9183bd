"""Only the backend's modules (``_storage/_sqlcipher_*.py``) may touch SQLCipher.

The storage actor owns every handle the node opens; the offline tools open
files through the same backend modules.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import fame

ROOT = Path(fame.__file__).parent
BACKEND = ROOT / "_storage"
IMPORT = re.compile(
    r"^\s*(import\s+sqlcipher3|from\s+sqlcipher3\b)|__import__\(\s*['\"]sqlcipher3|import_module\(\s*['\"]sqlcipher3",
    re.M,
)


def test_only_the_backend_imports_sqlcipher3() -> None:
    importers = {path for path in ROOT.rglob("*.py") if IMPORT.search(path.read_text())}
    assert ROOT / "_storage" / "_sqlcipher_backend.py" in importers
    outside = {
        path
        for path in importers
        if path.parent != BACKEND or not path.name.startswith("_sqlcipher_")
    }
    assert not outside, sorted(map(str, outside))


PSYCOPG = re.compile(
    r"^\s*(import\s+psycopg|from\s+psycopg(_pool)?\b)|import_module\(\s*['\"]psycopg", re.M
)


def test_only_the_postgres_backend_imports_psycopg() -> None:
    importers = {path for path in ROOT.rglob("*.py") if PSYCOPG.search(path.read_text())}
    assert importers == {BACKEND / "_postgres_backend.py"}, sorted(map(str, importers))


def test_importing_fame_loads_no_psycopg() -> None:
    """The postgres provider is imported when its profile is opened, never before."""
    code = (
        "import sys, fame, fame.storage, fame._storage._provider;"
        " sys.exit(any(m.split('.')[0] in ('psycopg', 'psycopg_pool') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
