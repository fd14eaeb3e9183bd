"""``fame rekey``: re-encrypt the project's storage under a new master key, crash-safe.

The steps, each of which a SIGKILL may interrupt:

1. Check every file of every directory before changing anything: no
   process holds it (a running node does), and it opens with the current
   key or the new one.
2. Write the new key as pending, ``FAME_STORAGE_MASTER_KEY_NEXT`` in
   ``conf/secrets.env`` (a new file, fsynced, renamed over the old). From
   here both keys are kept, and a node refuses to start until the rotation
   ends (``_runner``).
3. Re-encrypt each file not yet under the new key: a copy, fsynced, renamed
   over the original (``fame.storage.rekey_files``): every file is always
   whole under one of the two keys.
4. When every file is done, write ``FAME_STORAGE_MASTER_KEY=<new>`` without
   the pending line, the same way: one rename swaps the keys.

A second run after an interruption finds the pending key, skips the files
already under it, and finishes. The default directories are those of
``conf/agent.env`` and ``conf/sentinel.env``: every directory the master
key encrypts must be rekeyed together, or the swap would strand one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fame.storage import (
    DatabaseInUse,
    MasterKey,
    RekeyPlan,
    parse_master_key,
    plan_rekey,
    rekey_files,
)

from ._errors import shown_path
from ._processes import SERVICES
from ._settings import (
    AGENT_CONF,
    MASTER_KEY,
    PENDING_KEY,
    SECRETS_FILE,
    SENTINEL_CONF,
    ConfigFileError,
    read_env_file,
)

__all__ = ["PENDING_KEY", "RekeyRefused", "pending_hint", "rekey"]

_MB = 1024 * 1024


class RekeyRefused(ConfigFileError):
    """``fame rekey`` cannot start or go on; the message says what was kept."""


def pending_hint() -> str:
    """The line a node prints when it refuses to start during a rotation."""
    return (
        f"a master key rotation is pending ({PENDING_KEY} in {SECRETS_FILE}): some files are"
        " already under the new key. Finish it with: fame rekey"
    )


def _say(text: str) -> None:
    print(f"fame rekey: {text}", file=sys.stderr, flush=True)


def project_directories() -> list[Path]:
    """The encrypted storage directories of ``conf/agent.env`` and ``conf/sentinel.env``.

    One that does not exist yet (a service never started) has nothing to rekey.
    """
    found: list[Path] = []
    for conf in (AGENT_CONF, SENTINEL_CONF):
        if not conf.exists():
            continue
        values = read_env_file(conf)
        if values.get("FAME_STORAGE_PROFILE", "").strip() != "encrypted-sqlite":
            continue
        text = values.get("FAME_STORAGE_DB_DIRECTORY", "").strip()
        if text and Path(text).is_dir() and Path(text).absolute() not in found:
            found.append(Path(text).absolute())
    return found


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically: a new 0600 file, fsynced, renamed, dir fsynced.

    A crash leaves the old file or the new one, never a half-written one.
    """
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _secrets_text(keys: dict[str, str]) -> str:
    """``conf/secrets.env`` with the lines of ``keys`` set (an empty value drops the line)."""
    lines, left = [], dict(keys)
    for line in SECRETS_FILE.read_text(encoding="utf-8").splitlines():
        name = line.split("=", 1)[0].strip().removeprefix("export ").strip()
        if "=" in line and name in keys:
            value = left.pop(name, "")
            if value:
                lines.append(f"{name}={value}")  # where it was: the file keeps its order
            continue
        lines.append(line)
    lines += [f"{name}={value}" for name, value in left.items() if value]
    return "\n".join(lines) + "\n"


def _keys(new_key_text: str | None) -> tuple[MasterKey, MasterKey, bool]:
    """The current key, the new one, and whether the new one was already pending."""
    values = read_env_file(SECRETS_FILE)
    current_text = values.get(MASTER_KEY, "")
    if not current_text.strip():
        raise RekeyRefused(f"{SECRETS_FILE} has no {MASTER_KEY}: there is no key to rotate")
    outside = os.environ.get(MASTER_KEY)
    if outside is not None and outside.strip() != current_text.strip():
        raise RekeyRefused(
            f"{MASTER_KEY} is set in the environment to another key than {SECRETS_FILE}'s;"
            " fame rekey rotates the file's key: unset it and run again. Nothing was changed"
        )
    current = parse_master_key(current_text, MASTER_KEY)
    asked = parse_master_key(new_key_text, "--new-key-file") if new_key_text else None
    pending_text = values.get(PENDING_KEY, "")
    if pending_text.strip():
        pending = parse_master_key(pending_text, PENDING_KEY)
        if asked is not None and asked != pending:
            raise RekeyRefused(
                f"a rotation to another key is pending ({PENDING_KEY} in {SECRETS_FILE});"
                " run fame rekey without --new-key-file to finish it first. Nothing was changed"
            )
        return current, pending, True
    new = asked or MasterKey.generate()
    if new == current:
        raise RekeyRefused("the key of --new-key-file is the current master key: nothing to do")
    return current, new, False


def _plan(directories: Sequence[Path], current: MasterKey, new: MasterKey) -> list[RekeyPlan]:
    plans = []
    for directory in directories:
        if not directory.is_dir():
            raise RekeyRefused(f"{shown_path(directory)} is not a directory. Nothing was changed")
        try:
            plans.append(plan_rekey(directory, current, new))
        except DatabaseInUse as exc:
            raise RekeyRefused(
                f"{shown_path(exc.path)} is in use by a running node: stop the services first"
                " (just stop), then run fame rekey again. Nothing was changed"
            ) from None
    return plans


def rekey(directories: Sequence[Path], new_key_text: str | None) -> int:
    """Run ``fame rekey``; progress lines on stderr; 0 when every file is under the new key."""
    running = [f"{s.name} (pid {pid})" for s in SERVICES if (pid := s.pid()) is not None]
    if running:
        # A node opens a namespace's file on first use: one running may hold
        # no file yet, and open one under the old key mid-rotation.
        raise RekeyRefused(
            f"the services run: {', '.join(running)}; stop them first (just stop), then run"
            " fame rekey again. Nothing was changed"
        )
    current, new, pending = _keys(new_key_text)
    directories = list(directories) or project_directories()
    if not directories:
        raise RekeyRefused(
            f"no encrypted storage directory in {AGENT_CONF} or {SENTINEL_CONF}; name one:"
            " fame rekey DIR"
        )
    plans = _plan(directories, current, new)
    if pending:
        _say(f"resuming the pending rotation ({PENDING_KEY} in {SECRETS_FILE})")
    else:
        write_private(SECRETS_FILE, _secrets_text({PENDING_KEY: new.export()}))
        _say(f"wrote the new master key as pending ({PENDING_KEY} in {SECRETS_FILE})")
    files = sum(len(plan.todo) for plan in plans)
    size = sum(plan.bytes_todo for plan in plans)
    done = sum(len(plan.done) for plan in plans)
    _say(
        f"re-encrypting {files} files ({size / _MB:.1f} MB) in {len(plans)} directories;"
        f" {done} already done"
    )
    began = time.monotonic()
    written = 0
    for plan in plans:

        def progress(path: Path, size: int) -> None:
            _say(f"{shown_path(path)}: re-encrypted ({size / _MB:.1f} MB)")

        written += rekey_files(plan, current, new, progress)
    elapsed = time.monotonic() - began
    write_private(SECRETS_FILE, _secrets_text({MASTER_KEY: new.export(), PENDING_KEY: ""}))
    # The rate of the files as they were: a copy leaves out free pages, so
    # it may be smaller.
    rate = size / _MB / elapsed if elapsed > 0 else 0.0
    _say(
        f"done: {files} files, {size / _MB:.1f} MB in {elapsed:.2f} s ({rate:.1f} MB/s,"
        f" {written / _MB:.1f} MB written); {MASTER_KEY} in {SECRETS_FILE} is now the new key"
    )
    return 0
