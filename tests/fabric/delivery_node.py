"""A child process for the delivery tests: a sender that tells, or a target that counts.

usage: delivery_node.py URL sender [--tell]
       delivery_node.py URL target

``sender --tell`` tells ``add(amount=1)`` to ``counter@fame.fabric`` and
prints ``TOLD <message id>`` once the tell returned (the message is in the
outbox), then waits. ``sender`` alone prints ``READY <messages in the
outbox>`` once attached, then ``EMPTY`` when its outbox has delivered
everything. ``target`` serves :class:`Counter` at ``counter@fame.fabric``
and prints ``READY``; each application of ``add`` prints ``APPLIED
<request key> <total>``, the total kept in its store. Token from
FAME_ADMISSION_TOKEN, sentinel key from FAME_TEST_SENTINEL_KEY, storage
from FAME_STORAGE_*.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

import fame
from fame._cli._logs import configure_logging
from fame._protocol._credentials import parse_public_key
from fame._storage import open_storage_from_env
from fame.lowlevel import DeliveryConfig

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from fabric_agents import Counter

# Short waits between attempts, and no dead letter: the target comes when the test says.
QUICK = DeliveryConfig(first_retry=0.05, max_retry=0.5, attempt_timeout=2.0, max_attempts=10_000)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("role", choices=["sender", "target"])
    parser.add_argument("--tell", action="store_true")
    args = parser.parse_args()
    token = os.environ.get("FAME_ADMISSION_TOKEN")
    key_text = os.environ.get("FAME_TEST_SENTINEL_KEY")
    sentinel_keys = [parse_public_key(key_text)] if key_text else None
    async with (
        open_storage_from_env(os.environ) as storage,
        fame.open_node(storage_provider=storage, delivery=QUICK) as node,
    ):
        if args.role == "target":
            await node.spawn(Counter, "counter@fame.fabric")
        async with fame.attach(node, args.url, token=token, sentinel_keys=sentinel_keys) as uplink:
            await uplink.wait_bound()
            if args.role == "target":
                print("READY", flush=True)
            elif args.tell:
                told = await node.proxy("counter@fame.fabric", Counter).tell(Counter.add, 1)
                print("TOLD", told, flush=True)
            else:
                print("READY", len(node._courier.outbox), flush=True)
                await node._courier.wait_empty()
                print("EMPTY", flush=True)
            await trio.sleep_forever()


if __name__ == "__main__":
    configure_logging(os.environ)
    trio.run(main)
