"""``fame export`` and ``fame import``: a namespace as JSON lines, exactly, offline.

One record per line: key, the stored value bytes (base64), version and
expiry (see ``fame.storage.export_namespace``). Both open a stopped node's
file with the master key; a progress bar (tqdm, on stderr) shows on a
terminal or with ``--progress``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from fame.storage import export_namespace, files_in_use, import_namespace

from ._backup import BackupError, config_for
from ._errors import shown_path

__all__ = ["export", "import_"]


def _stopped(directory: Path, command: str) -> None:
    held = files_in_use(directory)
    if held:
        raise BackupError(
            f"{shown_path(held[0])} is in use by a running process: nothing was {command}ed;"
            " stop the services (`just stop`) first, or back the directory up while it runs"
            " with fame backup"
        )


@contextmanager
def _bar(show: bool, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a tqdm bar, or doing nothing."""
    if not show:
        yield lambda done, total: None
        return
    bar = tqdm(file=sys.stderr, unit=unit, unit_scale=True, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def export(
    directory: Path,
    namespace: str,
    output: Path | None,
    settings: Mapping[str, str],
    *,
    progress: bool,
) -> int:
    """Write ``namespace`` of ``directory`` as JSON lines to ``output`` (or stdout)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    config = config_for(directory, settings)
    _stopped(directory, "export")
    show = progress or sys.stderr.isatty()
    if output is None:
        with _bar(show, "rec") as bar:
            count = export_namespace(config, namespace, sys.stdout.buffer, bar)
        print(f"fame export: {count} records of {namespace}", file=sys.stderr)
        return 0
    tmp = output.with_name(output.name + ".partial")
    with tmp.open("wb") as out, _bar(show, "rec") as bar:
        count = export_namespace(config, namespace, out, bar)
    tmp.replace(output)
    print(f"fame export: {count} records of {namespace} written to {shown_path(output)}")
    return 0


def import_(
    directory: Path, namespace: str, source: Path, settings: Mapping[str, str], *, progress: bool
) -> int:
    """Write the records of the JSON lines file ``source`` into ``namespace``."""
    if not source.is_file():
        raise FileNotFoundError(f"{source} is not a file")
    config = config_for(directory, settings)
    _stopped(directory, "import")
    with _bar(progress or sys.stderr.isatty(), "B") as bar:
        count = import_namespace(config, namespace, source, bar)
    print(f"fame import: {count} records written into {namespace} in {shown_path(directory)}")
    return 0
