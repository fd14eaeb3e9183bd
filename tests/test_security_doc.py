"""``docs/security.md`` names, for each guarantee, the tests that show it: they must exist.

A test renamed or removed would otherwise leave the threat model pointing
at nothing. Every ``::test_name`` the document mentions must be a test
function defined in ``tests/``, and every ``tests/...py`` file it names
must exist.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"


def test_every_test_named_in_the_security_doc_exists() -> None:
    text = DOC.read_text()
    names = set(re.findall(r"::(test_\w+)", text))
    assert len(names) >= 20  # the table is there
    defined = {
        match
        for path in (ROOT / "tests").rglob("test_*.py")
        for match in re.findall(r"^(?:async )?def (test_\w+)\(", path.read_text(), re.MULTILINE)
    }
    assert sorted(names - defined) == []
    files = set(re.findall(r"(tests/[\w/]+\.py)", text))
    assert files and sorted(f for f in files if not (ROOT / f).is_file()) == []
