"""``conf/secrets.env`` is private: mode 0600 whatever the umask, its values never printed.

``fame init`` and ``just init`` write the master key and the admission
token; the file must be readable by its owner only from the moment it
exists, and a second init keeps it (and its mode).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .fame_services import REPO, fame_env, run_fame


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o077])
def test_fame_init_writes_secrets_env_mode_0600_whatever_the_umask(
    tmp_path: Path, umask: int, suite_secrets: Any
) -> None:
    done = run_fame(tmp_path, "init", umask=umask)
    assert done.returncode == 0, done.stderr
    secrets_file = tmp_path / "conf" / "secrets.env"
    suite_secrets.add_env_file(secrets_file)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1) for line in secrets_file.read_text().splitlines() if "=" in line
    )
    assert set(values) == {"FAME_STORAGE_MASTER_KEY", "FAME_ADMISSION_TOKEN", "FAME_ADMIN_TOKEN"}
    for value in values.values():
        assert value not in done.stdout + done.stderr


def test_just_init_writes_secrets_env_mode_0600_under_umask_022(
    tmp_path: Path, suite_secrets: Any
) -> None:
    just = _just()
    done = subprocess.run(
        [just, "--justfile", str(REPO / "justfile"),
         "--working-directory", str(tmp_path), "init"],
        env={**fame_env(), "FAME_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        umask=0o022,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    secrets_file = tmp_path / "conf" / "secrets.env"
    suite_secrets.add_env_file(secrets_file)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    # A second init keeps the file, and its mode.
    again = run_fame(tmp_path, "init", umask=0o022)
    assert again.returncode == 0 and "keeping" in again.stdout
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600


def _just() -> str:
    found = shutil.which(
        "just", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    assert found is not None, "just is not installed (pip install rust-just)"
    return found
