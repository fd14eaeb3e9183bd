"""``fame salvage DIR NAMESPACE --to OUT_DIR``: copy a damaged namespace's readable records.

The logic is :func:`fame.storage.salvage_namespace`; this prints what it
did. Exit status: 0 when every record was copied, :data:`INCOMPLETE` when
some could not be read (they are listed), 1 when nothing could be done.
The source directory is never written; run it with the node stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from fame.storage import LostRange, salvage_namespace, storage_config_from_env

__all__ = ["INCOMPLETE", "salvage"]

INCOMPLETE = 3
"""Exit status when the new file lacks records that could not be read."""
_SHOWN = 20


def _settings_for(directory: Path, settings: Mapping[str, str]) -> dict[str, str]:
    merged = dict(settings)
    merged["FAME_STORAGE_DB_DIRECTORY"] = str(directory)
    if not merged.get("FAME_STORAGE_PROFILE"):
        merged["FAME_STORAGE_PROFILE"] = "encrypted-sqlite"
    return merged


def _range(lost: LostRange) -> str:
    start = "from the first key" if lost.after is None else f"after {lost.after!r}"
    end = "to the last key" if lost.before is None else f"before {lost.before!r}"
    return f"keys {start} {end}"


def salvage(directory: Path, namespace: str, out: Path, settings: Mapping[str, str]) -> int:
    """Run the salvage and print its report; the exit status."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    config = storage_config_from_env(_settings_for(directory, settings))
    print(f"fame salvage: copying namespace {namespace!r} from {directory} to {out}", flush=True)
    report = salvage_namespace(config, namespace, out)
    print(f"copied {report.copied} records to {report.output}")
    for lost in report.lost[:_SHOWN]:
        print(f"unreadable: {_range(lost)}")
    if len(report.lost) > _SHOWN:
        print(f"unreadable: ... and {len(report.lost) - _SHOWN} more ranges")
    if report.pages:
        print(f"damaged pages of {report.source.name}: {', '.join(map(str, report.pages))}")
    if report.complete:
        print(f"fame salvage: every record copied; verify with: fame check {out}")
        return 0
    print(
        f"fame salvage: {report.copied} records copied to {report.output}, but"
        f" {len(report.lost)} range(s) of keys could not be read (listed above);"
        f" {report.source} was left unchanged: keep it until you have checked the copy"
        f" (fame check {out})",
        file=sys.stderr,
    )
    return INCOMPLETE
