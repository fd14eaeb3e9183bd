"""``docs/security.md`` names, for each guarantee, the tests that show it: they must exist.

A test renamed or removed would otherwise leave the threat model pointing
at nothing. Every ``::test_name`` the document mentions must be a test
function defined in ``tests/``, every ``tests/...py`` file it names must
exist, and every ``tests/path.py::test_name`` must be defined in that very
file. The threat model keeps one section per party (issue 11).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"
TEST_DEF = re.compile(r"^(?:async )?def (test_\w+)\(", re.MULTILINE)


def test_every_test_named_in_the_security_doc_exists() -> None:
    text = DOC.read_text()
    names = set(re.findall(r"::(test_\w+)", text))
    assert len(names) >= 20  # the tables are there
    defined = {
        match
        for path in (ROOT / "tests").rglob("test_*.py")
        for match in TEST_DEF.findall(path.read_text())
    }
    assert sorted(names - defined) == []
    files = set(re.findall(r"(tests/[\w/]+\.py)", text))
    assert files and sorted(f for f in files if not (ROOT / f).is_file()) == []


def test_each_test_the_security_doc_cites_is_in_the_file_it_names() -> None:
    text = DOC.read_text()
    cited = set(re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", text))
    assert len(cited) >= 20
    missing = sorted(
        f"{path}::{name}"
        for path, name in cited
        if not (ROOT / path).is_file() or name not in TEST_DEF.findall((ROOT / path).read_text())
    )
    assert missing == []


def test_the_threat_model_has_a_section_per_party() -> None:
    headings = re.findall(r"^##+ (.+)$", DOC.read_text(), re.MULTILINE)
    for party in (
        "The operator",
        "The sentinel",
        "A node",
        "A client",
        "Someone on the network",
        "Known limits",
        "Live administration",
        "Secret hygiene",
    ):
        assert party in headings, f"docs/security.md lacks a '{party}' section"
