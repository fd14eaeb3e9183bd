"""Upgrade every record of a namespace to its model's current version (``fame migrate``).

Reads upgrade old records in memory (see ``_model_version``); this writes
them back, so a namespace can drop its oldest upgrade steps one day. It
walks the namespace in key order, a batch of records at a time, and
rewrites the old ones of each batch in one transaction (:class:`Rewrite`:
each record only if it still has the version that was read, its expiry
kept). A kill at any moment leaves every record either as it was or
upgraded, never half of one; running it again skips the records already
current and finishes the rest. A record newer than the model
(:class:`RecordTooNew`) or one the upgrade cannot make fit the model
(:class:`RecordInvalid`) stops the run, naming the key: the batches before
it stay committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ._kv import KeyValueStore
from ._ops import Count, Rewrite, Scan

__all__ = ["DEFAULT_BATCH", "MigrationProgress", "migrate_namespace"]

DEFAULT_BATCH = 500
"""Records read, and at most rewritten, per transaction."""


@attrs.frozen
class MigrationProgress:
    """How far a migration got.

    ``total`` live records when it began; ``checked`` so far; of those,
    ``upgraded`` were rewritten now, ``current`` already had the model's
    version, and ``changed`` were changed by another writer between the
    read and the rewrite and left as that writer stored them.
    """

    namespace: str
    version: int
    total: int
    checked: int = 0
    upgraded: int = 0
    current: int = 0
    changed: int = 0


async def migrate_namespace(
    store: KeyValueStore[Any],
    *,
    batch: int = DEFAULT_BATCH,
    prefix: str = "",
    progress: Callable[[MigrationProgress], None] | None = None,
) -> MigrationProgress:
    """Rewrite every record of ``store`` (with keys starting with ``prefix``) older
    than its model in the model's version; return the final count.

    ``progress`` is called once before the first batch and after each one.
    """
    version = store._versions.version
    if version is None:
        raise TypeError("a migration needs a model class, not Any")
    if not 1 <= batch <= 10_000:
        raise ValueError(f"batch must be from 1 to 10000 records, got {batch!r}")
    total: int = await store._ask(Count())
    state = MigrationProgress(store.namespace, version, total)
    if progress is not None:
        progress(state)
    after: str | None = None
    while True:
        rows = await store._ask(Scan(prefix, after, batch, values=True))
        items = []
        for key, data, row_version in rows:
            upgraded = store._upgraded(key, data)
            if upgraded is not None:
                items.append((key, row_version, upgraded))
        done = await store._ask(Rewrite(tuple(items))) if items else 0
        state = attrs.evolve(
            state,
            checked=state.checked + len(rows),
            upgraded=state.upgraded + done,
            current=state.current + len(rows) - len(items),
            changed=state.changed + len(items) - done,
        )
        if progress is not None:
            progress(state)
        if len(rows) < batch:
            return state
        after = rows[-1][0]
