"""The prefix bound used by scans, at the edges of Unicode."""

from __future__ import annotations

import pytest

from fame._storage._ops import prefix_upper_bound


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [
        ("", None),
        ("a", "b"),
        ("ab", "ac"),
        ("a\ud7ff", "a\ue000"),  # surrogates cannot be stored: skip them
        ("\U0010ffff", None),
        ("a\U0010ffff", "b"),
        ("a\U0010ffff\U0010ffff", "b"),
    ],
)
def test_prefix_upper_bound(prefix: str, bound: str | None) -> None:
    assert prefix_upper_bound(prefix) == bound
    if bound is not None:
        assert prefix < bound
        assert prefix + "\U0010ffff" * 3 < bound
