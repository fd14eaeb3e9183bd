"""Actor addresses: ``name@path``.

An address names one actor (``storage``) on a path in the fabric
(``fame.fabric``). Every address that crosses an API boundary is parsed
here, so a malformed one is rejected once, with a message that says why,
instead of failing later as a missing route.
"""

from __future__ import annotations

import re
from typing import Final

from ._errors import FameError, quoted

__all__ = ["REPLY_NAME", "Address", "AddressError", "is_under", "is_valid_label"]

REPLY_NAME: Final = "_reply"
"""The name of every node's reply address, ``_reply@<node path>``.

Answers to a node's calls go there. The sentinel routes it by the node's
path and never lets a node bind it (``fame._protocol._attach``).
"""

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_LABEL_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")
MAX_PATH_LENGTH: Final = 253


class AddressError(FameError, ValueError):
    """An address string that does not have the form ``name@path``."""


class Address:
    """A parsed, validated ``name@path`` address.

    Instances are immutable, hashable and compare by value; ``str(address)``
    gives back the canonical text, so ``Address.parse(str(a)) == a``.
    """

    __slots__ = ("_text", "name", "path")

    name: str
    path: str
    _text: str

    def __init__(self, name: str, path: str) -> None:
        _check_name(name)
        _check_path(path)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_text", f"{name}@{path}")

    @classmethod
    def parse(cls, text: str | Address) -> Address:
        """Parse ``text``; raise :class:`AddressError` naming the problem."""
        if isinstance(text, Address):
            return text
        if not isinstance(text, str):
            raise AddressError(f"an address must be a string, not {type(text).__name__}")
        if text.count("@") != 1:
            what = "has no '@'" if "@" not in text else "has more than one '@'"
            raise AddressError(f"invalid address {quoted(text)}: it {what}; expected 'name@path'")
        name, path = text.split("@")
        try:
            return cls(name, path)
        except AddressError as exc:
            raise AddressError(f"invalid address {quoted(text)}: {exc}") from None

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("Address is immutable")

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Address({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Address):
            return self._text == other._text
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._text)


def _check_name(name: str) -> None:
    if not name:
        raise AddressError("the name before '@' is empty")
    if not _NAME_RE.fullmatch(name):
        raise AddressError(
            f"name {quoted(name)} must be 1-64 characters of letters, digits, '_', '.' or '-',"
            " not starting with '.' or '-'"
        )


def is_valid_label(text: str) -> bool:
    """Whether ``text`` is one path label: 1-63 ASCII letters, digits, '_' or '-', no leading '-'.

    Node ids are path labels too: the sentinel checks them with this rule.
    """
    return _LABEL_RE.fullmatch(text) is not None


def _check_path(path: str) -> None:
    if not path:
        raise AddressError("the path after '@' is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise AddressError(f"path is longer than {MAX_PATH_LENGTH} characters")
    for label in path.split("."):
        if not label:
            raise AddressError(f"path {path!r} has an empty label (leading, trailing or '..')")
        if not is_valid_label(label):
            raise AddressError(
                f"path label {label!r} must be 1-63 characters of letters, digits, '_' or '-',"
                " not starting with '-'"
            )


def is_under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies under it (``a.b`` is under ``b``).

    Paths read like domain names, the most specific label first.
    """
    return path == prefix or path.endswith("." + prefix)
