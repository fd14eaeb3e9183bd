"""The project directory: where ``conf/``, ``data/``, ``run/`` and the agents' modules live.

``fame`` works against one directory, ``--project DIR`` or ``FAME_PROJECT_DIR``
(the current directory by default). The command changes into it first, so
every relative path in ``conf/*.env`` (``FAME_STORAGE_DB_DIRECTORY=./data/agent``)
means the same whoever runs it, and ``fame node`` imports the agents that
``FAME_AGENTS`` names (``module:Class@address``) from it.

``fame init`` makes an empty directory a project: the files below, each
written only if it is missing, so an existing project keeps its settings.
"""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

from fame import security

__all__ = [
    "PROJECT_ENV",
    "STARTER_AGENT",
    "STARTER_MODULE",
    "enter_project",
    "import_from_project",
    "project_files",
    "resolve_project",
]

PROJECT_ENV = "FAME_PROJECT_DIR"
STARTER_MODULE = Path("storage_agent.py")
"""The starter agent ``fame init`` writes: the storage example's agent."""
STARTER_AGENT = "storage_agent:StorageAgent@storage@fame.fabric"

_SENTINEL_ENV = """\
# The sentinel's settings (`fame sentinel --config conf/sentinel.env --config conf/secrets.env`).
# Secrets (FAME_STORAGE_MASTER_KEY, FAME_ADMISSION_TOKEN) live in conf/secrets.env,
# written by `fame init`. Environment variables override this file.
FAME_STORAGE_PROFILE=encrypted-sqlite
FAME_STORAGE_DB_DIRECTORY=./data/sentinel
FAME_SENTINEL_HOST=127.0.0.1
FAME_SENTINEL_PORT=8000
"""

_AGENT_ENV = f"""\
# The agent node's settings (`fame node --config conf/agent.env --config conf/secrets.env`).
# FAME_AGENTS lists the agents to serve, separated by spaces, each module:Class@address;
# the modules are imported from the project directory. Environment variables override this file.
FAME_STORAGE_PROFILE=encrypted-sqlite
FAME_STORAGE_DB_DIRECTORY=./data/agent
FAME_AGENTS={STARTER_AGENT}
"""


def resolve_project(directory: Path | str | None) -> Path:
    """The project directory: ``directory``, else ``FAME_PROJECT_DIR``, else the current one."""
    chosen = directory if directory else os.environ.get(PROJECT_ENV, "").strip()
    return Path(chosen or ".").resolve()


def enter_project(directory: Path | str | None) -> Path:
    """Change into the project directory (see :func:`resolve_project`) and return it."""
    project = resolve_project(directory)
    if not project.is_dir():
        raise FileNotFoundError(f"project directory {project} does not exist")
    os.chdir(project)
    return project


def import_from_project(project: Path) -> None:
    """Let ``import`` find the project's own modules (its agents), ahead of installed ones."""
    entry = str(project)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def project_files() -> dict[Path, str]:
    """What ``fame init`` writes into a new project (relative paths), except the secrets."""
    starter = importlib.resources.files("fame._cli").joinpath("starter", STARTER_MODULE.name)
    return {
        Path("conf/sentinel.env"): _SENTINEL_ENV,
        Path("conf/agent.env"): _AGENT_ENV,
        Path("conf/policy.toml"): security.default_policy_text(),
        STARTER_MODULE: starter.read_text(encoding="utf-8"),
    }
