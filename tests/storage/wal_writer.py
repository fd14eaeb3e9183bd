"""A child process for the offline-tool tests: writes a namespace, says what was acknowledged.

``python -m tests.storage.wal_writer MODE NAMESPACE COUNT [ACKS_FILE]``,
configured by the ``FAME_STORAGE_*`` environment. Every write that returned
is printed as ``ack KEY`` (flushed; also appended to ``ACKS_FILE`` if
given) before the next one starts, so the parent knows what the store
acknowledged whatever happens next. It prints ``writing`` when the store
is open. Modes:

- ``exit``: write COUNT records, print ``done``, close the store cleanly;
- ``hold``: write COUNT records, print ``done``, then wait on stdin with the
  store open (the parent SIGKILLs it, or checks that it holds the file);
- ``fill``: write until :class:`StorageFull` (at most COUNT), print
  ``full``, close the store (on a full disk the ``-wal`` is kept);
- ``serve``: read every key of ``ack`` lines given on stdin, print
  ``read N`` (how many came back with their value), then try one write and
  print ``write-full FILE`` if it failed with :class:`StorageFull`, else
  ``write-ok``.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

import trio

from fame.storage import StorageFull, open_storage, storage_config_from_env


def value_of(key: str) -> str:
    """The value written under ``key``: long enough to fill pages quickly."""
    return (key + ":") * 40


def open_acks(path: str | None) -> TextIO | None:
    return open(path, "a", encoding="utf-8") if path else None


async def main(mode: str, namespace: str, count: int, acks_file: str | None) -> None:
    config = storage_config_from_env(os.environ)
    acks = open_acks(acks_file)
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(str, namespace)
        print("writing", flush=True)
        if mode == "serve":
            keys = [line.split()[1] for line in sys.stdin if line.startswith("ack ")]
            found = await store.get_many(keys)
            good = sum(1 for key in keys if found.get(key) == value_of(key))
            print(f"read {good}", flush=True)
            try:
                await store.set("one-more", value_of("one-more"))
            except StorageFull as exc:
                print(f"write-full {os.path.basename(exc.path)}", flush=True)
            else:
                print("write-ok", flush=True)
            return
        for i in range(count):
            key = f"k{i:06d}"
            try:
                await store.set(key, value_of(key))
            except StorageFull:
                if mode != "fill":
                    raise
                print("full", flush=True)
                return
            if acks is not None:
                acks.write(f"ack {key}\n")
                acks.flush()  # in the kernel's hands: a SIGKILL cannot lose it
            print(f"ack {key}", flush=True)
        print("done", flush=True)
        if mode == "hold":
            await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), (sys.argv[4:] or [None])[0])
