"""The secret-leak scan: which secrets the suite made, and where any of them ended up.

Used twice: by ``tests/conftest.py`` at the end of the session, over
everything every worker wrote (``pytest -n`` included), and by
``tests/reliability/test_secrets.py`` over its own error-path scenario.

Secrets are known from the :class:`SecretRegistry` (fixtures add the
tokens and master keys they make; each worker also writes them to
``suite-secrets.env`` in its base temporary directory, so the controller
of an xdist run learns them) and from every ``*.env`` file under the
scanned directory. For every master key the per-file key of every
encrypted database file name found there is derived too. Each secret is
searched in every encoding it could take: as given, hex, base64 and
base64url with and without padding, the repr of its bytes, the raw bytes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ahocorasick

import fame
from fame._storage import parse_master_key
from fame._storage._keys import MasterKey, derive_file_key, find_file_key
from fame._storage._namespace import ENCRYPTED_SUFFIX

ENV_SECRETS = {"FAME_STORAGE_MASTER_KEY": "master_key", "FAME_ADMISSION_TOKEN": "token"}
ENV_NAMES = {kind: name for name, kind in ENV_SECRETS.items()}
# Files that hold secrets on purpose (or encrypted with them): not scanned.
SKIPPED_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".env", ".pyc")
# A run of characters every text encoding of a secret is made of (hex, base64, base64url).
TOKEN_CHARS = re.compile(rb"[A-Za-z0-9+/=_-]{16,}")


class SecretRegistry:
    """Every secret of the session by kind (``master_key``, ``token``), and captured texts.

    After :meth:`persist_to`, every secret is also appended to that
    ``NAME=value`` file, which the scan of its directory reads back.
    """

    def __init__(self) -> None:
        self.secrets: dict[str, set[str]] = {"master_key": set(), "token": set()}
        # (where, text) of pytest's captured output, each once (a dict keeps the order).
        self.texts: dict[tuple[str, str], None] = {}
        self._file: Path | None = None

    def add(self, kind: str, value: str) -> None:
        if kind not in self.secrets:
            raise ValueError(f"unknown secret kind {kind!r}: {sorted(self.secrets)}")
        if value and value not in self.secrets[kind]:
            self.secrets[kind].add(value)
            if self._file is not None:
                with open(self._file, "a", encoding="utf-8") as out:
                    out.write(f"{ENV_NAMES[kind]}={value}\n")

    def persist_to(self, path: Path) -> None:
        """Write every secret so far, and each later one, to ``path`` (a ``.env`` file)."""
        if self._file == path:
            return
        path.write_text(
            "".join(
                f"{ENV_NAMES[kind]}={value}\n"
                for kind, values in sorted(self.secrets.items())
                for value in sorted(values)
            ),
            encoding="utf-8",
        )
        self._file = path

    def add_env_file(self, path: Path) -> None:
        """Register the secrets a ``NAME=value`` file holds (``conf/secrets.env``)."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self.add_env_lines(text.splitlines())

    def add_env_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            name, sep, value = line.strip().removeprefix("export ").partition("=")
            kind = ENV_SECRETS.get(name.strip())
            if sep and kind is not None:
                self.add(kind, value.strip().strip("\"'"))


@dataclass
class Needles:
    """Every secret in every encoding, split by how they are searched."""

    words: dict[bytes, str] = field(default_factory=dict)  # text encodings -> what
    raw: dict[bytes, str] = field(default_factory=dict)  # raw bytes and repr forms -> what
    _automaton: Any = field(default=None, repr=False)
    _automaton_size: int = field(default=0, repr=False)
    counts: dict[str, int] = field(default_factory=dict)

    def add_bytes(self, material: bytes, what: str) -> None:
        for text in (
            material.hex(),
            material.hex().upper(),
            base64.b64encode(material).decode(),
            base64.urlsafe_b64encode(material).decode(),
        ):
            self.add_word(text, what)
            self.add_word(text.rstrip("="), what)
        self.raw[material] = what
        self.raw[repr(material)[2:-1].encode()] = what

    def add_word(self, text: str, what: str) -> None:
        assert TOKEN_CHARS.fullmatch(text.encode()), f"{what}: not a token-like secret"
        self.words[text.encode()] = what

    def add_text(self, text: str, what: str) -> None:
        """A secret given as text (token, master key as written): itself and its bytes."""
        if TOKEN_CHARS.fullmatch(text.encode()):
            self.add_word(text, what)
        else:
            self.raw[text.encode()] = what
        self.add_bytes(text.encode(), what)

    def find(self, data: bytes) -> set[str]:
        """What secrets ``data`` contains, in any encoding.

        One Aho-Corasick pass over ``data`` for every needle at once: a
        run makes thousands of keys (one per database file) and writes
        megabytes of logs and values, so searching needle by needle, or
        sliding every needle length along every run, took longer than the
        tests. Bytes are mapped one to one to text (latin-1) because the
        automaton takes text.
        """
        if not self.words and not self.raw:
            return set()  # an automaton needs a word
        if self._automaton is None or self._automaton_size != len(self.words) + len(self.raw):
            automaton = ahocorasick.Automaton()
            for needle, what in (*self.words.items(), *self.raw.items()):
                automaton.add_word(needle.decode("latin-1"), what)
            automaton.make_automaton()
            self._automaton = automaton
            self._automaton_size = len(self.words) + len(self.raw)
        return {what for _end, what in self._automaton.iter(data.decode("latin-1"))}


def build_needles(master_keys: Iterable[str], tokens: Iterable[str], files: set[Path]) -> Needles:
    needles = Needles()
    masters = sorted(set(master_keys))
    keys: list[tuple[int, MasterKey]] = []
    for number, text in enumerate(masters):
        needles.add_text(text, f"master key #{number}")
        try:
            key = parse_master_key(text)
        except fame.FameError:
            continue  # a deliberately bad key: only its text can leak
        needles.add_bytes(key._material, f"master key #{number} (decoded)")
        keys.append((number, key))
    for path in sorted(files):
        _add_file_keys(needles, path, keys)
    for number, text in enumerate(sorted(set(tokens))):
        needles.add_text(text, f"admission token #{number}")
    needles.counts["master_keys"] = len(masters)
    needles.counts["tokens"] = len(set(tokens))
    return needles


def _add_file_keys(needles: Needles, path: Path, keys: list[tuple[int, MasterKey]]) -> None:
    """The keys ``path`` is opened with: the one of the master key that opens it.

    Each file is encrypted under one master key: pairing every master with
    every file would make the needles (and the scan) grow with their
    product. The master whose key authenticates page 1 is found first (the
    last one found is tried first: a directory's files share theirs); for
    it, the file's salted key and the first, unsalted scheme's key are
    searched. A file no master opens (damaged page 1, a foreign key) gets
    every master's salted and unsalted keys.
    """
    candidates = []
    for number, master in keys:
        found_key = find_file_key(master, path)
        if found_key.verified:
            candidates = [(number, master, found_key)]
            keys.remove((number, master))
            keys.insert(0, (number, master))
            break
    if not candidates:
        candidates = [(number, master, find_file_key(master, path)) for number, master in keys]
    for number, master, found_key in candidates:
        name = path.name
        needles.add_bytes(found_key.key[:32], f"file key of {name} (master #{number})")
        needles.add_bytes(
            derive_file_key(master, name), f"v1 file key of {name} (master #{number})"
        )
        needles.counts["derived_keys"] = needles.counts.get("derived_keys", 0) + 1


@dataclass
class Scan:
    """What one scan searched and what it found."""

    leaks: list[str]
    files: int
    log_files: int
    texts: int
    scanned_bytes: int
    counts: dict[str, int]
    encodings: int

    def figures(self) -> dict[str, int]:
        return {
            "files_scanned": self.files,
            "log_files_scanned": self.log_files,
            "captured_sections_scanned": self.texts,
            "bytes_scanned": self.scanned_bytes,
            "master_keys": self.counts["master_keys"],
            "derived_file_keys": self.counts.get("derived_keys", 0),
            "tokens": self.counts["tokens"],
            "encodings_searched": self.encodings,
        }


def scanned_files(base: Path) -> Iterator[Path]:
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.endswith(SKIPPED_SUFFIXES):
            yield path


def scan(base: Path, registry: SecretRegistry, texts: Iterable[tuple[str, str]] = ()) -> Scan:
    """Search every file under ``base`` and every ``(where, text)`` for every known secret.

    The secrets are the registry's and those of every ``*.env`` file under
    ``base`` (registered with it as they are found).
    """
    for path in base.rglob("*.env"):
        registry.add_env_file(path)
    encrypted_files = set(base.rglob("*" + ENCRYPTED_SUFFIX))
    needles = build_needles(
        registry.secrets["master_key"], registry.secrets["token"], encrypted_files
    )
    leaks: list[str] = []
    files = log_files = scanned_bytes = sections = 0
    for path in scanned_files(base):
        data = path.read_bytes()
        files += 1
        log_files += path.suffix == ".log"
        scanned_bytes += len(data)
        leaks += [f"{path.relative_to(base)}: {what}" for what in sorted(needles.find(data))]
    for where, text in texts:
        data = text.encode("utf-8", "surrogateescape")
        sections += 1
        scanned_bytes += len(data)
        leaks += [f"{where}: {what}" for what in sorted(needles.find(data))]
    return Scan(
        leaks=leaks,
        files=files,
        log_files=log_files,
        texts=sections,
        scanned_bytes=scanned_bytes,
        counts=needles.counts,
        encodings=len(needles.words) + len(needles.raw),
    )
