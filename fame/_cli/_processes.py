"""The background services of a project and how their pid files are trusted.

``fame up`` starts each :class:`Service` with a pid file in ``run/``; every
command that must know whether one runs (``stop``, ``status``, and the
offline administration that refuses to write under a running sentinel)
asks :meth:`Service.pid`, which trusts the file only if that process is
alive and its command line is the one started here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import attrs

from ._settings import AGENT_CONF, SECRETS_FILE, SENTINEL_CONF

NOT_SERVING = "NOT serving"
"""How a node's ready file starts while the sentinel refuses an address of its agents.

``fame status`` then does not say "serving", and ``/healthz`` answers 503.
"""

__all__ = ["NOT_SERVING", "RUN_DIR", "SERVICES", "Service", "alive"]

RUN_DIR = Path("run")


@attrs.frozen
class Service:
    """One background process: its name, config file and ``fame`` arguments."""

    name: str
    config: Path
    args: tuple[str, ...]

    @property
    def pid_file(self) -> Path:
        return RUN_DIR / f"{self.name}.pid"

    @property
    def ready_file(self) -> Path:
        return RUN_DIR / f"{self.name}.ready"

    @property
    def log_file(self) -> Path:
        return RUN_DIR / f"{self.name}.log"

    def command(self, *extra: str) -> list[str]:
        """The command line that runs this service, with ``extra`` arguments at the end."""
        return [
            # -P: the project's own modules cannot shadow fame; `fame node` adds the
            # project directory to sys.path itself, for the agents only.
            sys.executable, "-P", "-m", "fame._cli.fame", *self.args,
            "--project", str(Path.cwd()),
            "--config", str(self.config), "--config", str(SECRETS_FILE),
            "--ready-file", str(self.ready_file), *extra,
        ]  # fmt: skip

    def pid(self, root: Path = Path()) -> int | None:
        """The pid of this service if it is running (and really is this service).

        ``root`` is the project directory, the working directory by default.
        """
        try:
            pid = int((root / self.pid_file).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None if not alive(pid) else pid
        ours = b"fame._cli.fame" in cmdline and self.args[0].encode() in cmdline
        return pid if ours and alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


SERVICES = (
    Service("sentinel", SENTINEL_CONF, ("sentinel",)),
    Service("agent", AGENT_CONF, ("node",)),  # its agents: FAME_AGENTS in conf/agent.env
)
