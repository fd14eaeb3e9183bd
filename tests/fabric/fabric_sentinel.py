"""A child process for the fabric tests: a sentinel.

usage: fabric_sentinel.py PORT [--open] [--cert CERT --key KEY]

Prints ``LISTENING <port>`` once serving. Token from FAME_ADMISSION_TOKEN;
storage from the FAME_STORAGE_* variables (the tests use the sqlite
profile in a temporary directory, so routes survive a restart).
"""

from __future__ import annotations

import argparse
import logging

import trio

from fame._fabric.sentinel._server import open_sentinel


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--open", action="store_true")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--heartbeat", type=float, default=0.5)
    args = parser.parse_args()
    async with open_sentinel(
        port=args.port,
        open_admission=args.open,
        certfile=args.cert,
        keyfile=args.key,
        heartbeat=args.heartbeat,
    ) as sentinel:
        print("LISTENING", sentinel.port, flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main)
