"""Namespaces and the database file each one lives in.

A namespace becomes part of a file name, so the rules are strict: agents get
``[A-Za-z0-9][A-Za-z0-9_.-]{0,127}``; names starting with ``__`` belong to
the node (``__node_meta``, ``__route_store``, ...). Neither can contain a
path separator or start with a dot, and the resolved path is checked to lie
directly in the storage directory anyway.
"""

from __future__ import annotations

import re
from pathlib import Path

from .._core._errors import quoted
from ._errors import InvalidNamespace

__all__ = [
    "ENCRYPTED_SUFFIX",
    "PLAIN_SUFFIX",
    "check_agent_namespace",
    "check_internal_namespace",
    "database_path",
    "namespace_files",
]

ENCRYPTED_SUFFIX = "_encrypted_value.db"
PLAIN_SUFFIX = "_value.db"

_AGENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_INTERNAL = re.compile(r"__[A-Za-z0-9][A-Za-z0-9_.-]{0,125}")


def check_agent_namespace(namespace: object) -> str:
    """Return ``namespace`` if an agent may use it, else raise :class:`InvalidNamespace`."""
    if not isinstance(namespace, str):
        raise InvalidNamespace(f"a namespace must be a str, not {type(namespace).__name__}")
    if namespace.startswith("__"):
        raise InvalidNamespace(
            f"namespace {quoted(namespace)} is reserved: names starting with '__' belong to"
            " the node"
        )
    if not _AGENT.fullmatch(namespace):
        raise InvalidNamespace(
            f"invalid namespace {quoted(namespace)}: expected 1 to 128 characters from"
            " [A-Za-z0-9_.-], starting with a letter or digit"
        )
    return namespace


def check_internal_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is a valid node-reserved (``__``) namespace."""
    if not isinstance(namespace, str) or not _INTERNAL.fullmatch(namespace):
        shown = quoted(namespace) if isinstance(namespace, str) else repr(namespace)
        raise InvalidNamespace(
            f"invalid internal namespace {shown}: expected '__' followed by a letter"
            " or digit and up to 125 characters from [A-Za-z0-9_.-]"
        )
    return namespace


def database_path(directory: Path, namespace: str, *, encrypted: bool) -> Path:
    """The file of ``namespace`` in ``directory``; refuses anything that escapes it."""
    name = namespace + (ENCRYPTED_SUFFIX if encrypted else PLAIN_SUFFIX)
    path = directory / name
    # The regexes already forbid separators; this guards against a future
    # change to them and against a directory that is itself a symlink trick.
    if path.name != name or path.resolve().parent != directory.resolve():
        raise InvalidNamespace(f"namespace {quoted(namespace)} would leave the storage directory")
    return path


def namespace_files(directory: Path, *, encrypted: bool) -> list[tuple[str, Path]]:
    """The namespaces that have a file of this profile in ``directory``, with the files.

    ``_value.db`` is also the end of ``_encrypted_value.db``: the plain
    profile does not count the encrypted profile's files as its own.
    """
    suffix = ENCRYPTED_SUFFIX if encrypted else PLAIN_SUFFIX
    return [
        (path.name.removesuffix(suffix), path)
        for path in sorted(directory.iterdir())
        if path.name.endswith(suffix) and (encrypted or not path.name.endswith(ENCRYPTED_SUFFIX))
    ]
