"""A real PostgreSQL server for the tests, started in a temporary directory.

``initdb`` and ``pg_ctl`` come from Debian's ``postgresql`` package (``.ci/run``
installs it). They refuse to run as root, so under root they run as the
``postgres`` user (``runuser``), in a directory that user owns. The server
listens on 127.0.0.1 on a free port with ``trust`` authentication, and on a
Unix socket in its directory; ``fsync`` is off (the tests check fame, not the
disk: a commit survives a crash of the server, not of the machine). Missing
binaries fail the tests, never skip them: CI must run these.

Each test gets a schema of its own (:meth:`PostgresServer.new_dsn`): a DSN
whose ``search_path`` is a fresh schema, so the fame tables of one test never
meet another's, and making one costs a ``CREATE SCHEMA`` only.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "find_bindir"]

START_WAIT = 60
"""Seconds ``pg_ctl`` waits for the server to start or stop, at most."""
USER = "fame"


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``, or a clear failure."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found:
            candidates.append(found)
    # Debian keeps them out of PATH, one directory per major version: newest first.
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise RuntimeError(
        "PostgreSQL's initdb and pg_ctl were not found (looked in pg_config --bindir,"
        " /usr/lib/postgresql/*/bin and PATH): install Debian's postgresql package"
        " (apt-get install -y postgresql; .ci/run does it) to run the postgres tests"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One server in its own temporary directory; :meth:`stop` removes everything."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        """``fsync`` on (the benchmark), not off (the tests)."""
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="fame-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            # initdb refuses root: the server's files belong to postgres.
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        self._started = False

    def _run(self, *argv: str) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_WAIT + 30)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr[-2000:]}\n{tail}"
            )

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=100"
        )
        if not self.durable:
            # Commits still reach the kernel (synchronous_commit stays on), so they
            # survive a crash of the server, as the restart test needs; not of the OS.
            options += " -c fsync=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-w",
            "-t",
            str(START_WAIT),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
        )
        self._started = True

    def stop(self) -> None:
        try:
            if self._started:
                self._run(
                    "pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30"
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        """Stop the server as a crash would (``-m immediate``), then start it again."""
        log = str(self.root / "server.log")  # else its output would hold _run's pipe open
        self._run(
            "pg_ctl",
            "restart",
            "-D",
            str(self.data),
            "-m",
            "immediate",
            "-w",
            "-t",
            "60",
            "-l",
            log,
        )

    def dsn(self, **options: str) -> str:
        parts = [f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres"]
        parts += [f"{name}={value}" for name, value in options.items()]
        return " ".join(parts)

    def new_dsn(self) -> str:
        """A DSN whose tables live in a new, empty schema of their own."""
        schema = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return self.dsn(options=f"'-c search_path={schema}'")

    def sql(
        self, query: str, dsn: str | None = None, params: tuple[object, ...] = ()
    ) -> list[tuple[object, ...]]:
        """Run one statement as the superuser; its rows (for the tests' own checks)."""
        with psycopg.connect(dsn or self.dsn(), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(query, params or None)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []
