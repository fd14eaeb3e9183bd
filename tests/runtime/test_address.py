"""Property tests of ``name@path`` addresses."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fame.errors import AddressError
from fame.lowlevel import Address

names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}", fullmatch=True)
labels = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,62}", fullmatch=True)
paths = st.lists(labels, min_size=1, max_size=6).map(".".join).filter(lambda p: len(p) <= 253)

# An oracle written from the documented grammar, independent of the implementation.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}", re.ASCII)
_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,62}", re.ASCII)


def is_valid(text: str) -> bool:
    if text.count("@") != 1:
        return False
    name, path = text.split("@")
    if not _NAME.fullmatch(name) or not path or len(path) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in path.split("."))


@settings(max_examples=300, deadline=None)  # pure code: a loaded machine is not a bug
@given(names, paths)
def test_parse_format_round_trip(name: str, path: str) -> None:
    text = f"{name}@{path}"
    address = Address.parse(text)
    assert (address.name, address.path) == (name, path)
    assert str(address) == text
    assert Address.parse(str(address)) == address
    assert Address(name, path) == address
    assert hash(Address(name, path)) == hash(address)
    assert Address.parse(address) is address
    assert repr(address) == f"Address({text!r})"


# Text built mostly from the characters that matter, so the oracle sees both outcomes.
address_like = st.text(alphabet="ab-_.@9 é/", max_size=20) | st.text(max_size=20)


@settings(max_examples=500, deadline=None)
@given(address_like)
def test_any_text_parses_exactly_when_valid(text: str) -> None:
    if is_valid(text):
        assert str(Address.parse(text)) == text
    else:
        with pytest.raises(AddressError) as info:
            Address.parse(text)
        message = str(info.value)
        assert message.startswith(f"invalid address {text!r}: ")
        assert len(message) > len(f"invalid address {text!r}: ")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("storage", "it has no '@'; expected 'name@path'"),
        ("a@b@c", "it has more than one '@'"),
        ("@fame.fabric", "the name before '@' is empty"),
        ("storage@", "the path after '@' is empty"),
        (".storage@fame", "name '.storage' must be 1-64 characters"),
        ("sto rage@fame", "name 'sto rage' must be"),
        ("a" * 65 + "@fame", "must be 1-64 characters"),
        ("storage@fame..fabric", "has an empty label"),
        ("storage@.fame", "has an empty label"),
        ("storage@fame.", "has an empty label"),
        ("storage@-fame.fabric", "path label '-fame' must be 1-63 characters"),
        ("storage@fa/me", "path label 'fa/me'"),
        ("storage@" + "a" * 64, "path label"),
        ("storage@" + ".".join(["abc"] * 64), "path is longer than 253 characters"),
    ],
)
def test_invalid_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as info:
        Address.parse(text)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_strings_are_rejected() -> None:
    with pytest.raises(AddressError, match="must be a string, not int"):
        Address.parse(42)  # type: ignore[arg-type]


def test_addresses_are_immutable() -> None:
    address = Address.parse("storage@fame.fabric")
    with pytest.raises(AttributeError, match="immutable"):
        address.name = "other"
    assert address.name == "storage"
    assert address.path == "fame.fabric"
