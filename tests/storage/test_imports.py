"""Only the backend module may touch SQLCipher: the storage actor owns every handle."""

from __future__ import annotations

import re
from pathlib import Path

import fame

ROOT = Path(fame.__file__).parent
ALLOWED = {ROOT / "_storage" / "_sqlcipher_backend.py"}
IMPORT = re.compile(
    r"^\s*(import\s+sqlcipher3|from\s+sqlcipher3\b)|__import__\(\s*['\"]sqlcipher3|import_module\(\s*['\"]sqlcipher3",
    re.M,
)


def test_only_the_backend_imports_sqlcipher3() -> None:
    importers = {path for path in ROOT.rglob("*.py") if IMPORT.search(path.read_text())}
    assert importers == ALLOWED
