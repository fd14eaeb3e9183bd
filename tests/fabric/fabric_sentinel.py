"""A child process for the fabric tests: a sentinel.

usage: fabric_sentinel.py PORT [--open] [--enrolled-only] [--cert CERT --key KEY]

Prints ``LISTENING <port> <sentinel public key>`` once serving. New nodes
are enrolled on first use unless ``--enrolled-only`` (these tests are about
routing; admission has its own). Token from FAME_ADMISSION_TOKEN;
storage from the FAME_STORAGE_* variables (the tests use the sqlite
profile in a temporary directory, so routes survive a restart).
"""

from __future__ import annotations

import argparse
import logging
import os

import trio

from fame._cli._logs import configure_logging
from fame._fabric._transport import DEFAULT_HEARTBEAT
from fame._fabric.sentinel._server import open_sentinel
from fame._protocol._credentials import format_public_key
from fame._storage import open_storage_from_env


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--open", action="store_true")
    parser.add_argument("--enrolled-only", action="store_true")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    # The library's default: a loaded machine can starve a process for more than
    # the 1.5 s that a 0.5 s heartbeat allows. Tests about liveness pass their own.
    parser.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT)
    args = parser.parse_args()
    token = None if args.open else os.environ.get("FAME_ADMISSION_TOKEN")
    async with (
        open_storage_from_env(os.environ) as storage,
        open_sentinel(
            port=args.port,
            token=token,
            open_admission=args.open,
            trust_on_first_use=not args.enrolled_only and not args.open,
            storage_provider=storage,
            certfile=args.cert,
            keyfile=args.key,
            heartbeat=args.heartbeat,
        ) as sentinel,
    ):
        print("LISTENING", sentinel.port, format_public_key(sentinel.public_keys[0]), flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    configure_logging(os.environ)  # FAME_SHOW_ENVELOPES, as the fame programs
    logging.getLogger().setLevel(logging.INFO)
    trio.run(main)
