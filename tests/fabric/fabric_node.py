"""A child process for the fabric tests: a node hosting test agents, attached to a sentinel.

usage: fabric_node.py URL [--no-spawn] [--steal NODE_ID] [--cafile CA] [--pool ADDRESS]

Prints ``READY <node id> <bound addresses>`` once attached and bound, or
``REFUSED <reason>`` if the sentinel refuses it. Token from
FAME_ADMISSION_TOKEN, storage from FAME_STORAGE_*.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

import fame
from fame._cli._logs import configure_logging
from fame._fabric._transport import client_ssl_context
from fame._fabric._uplink import attach
from fame._protocol._credentials import parse_public_key
from fame._protocol._identity import Identity
from fame._storage import open_storage_from_env

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from fabric_agents import Echo


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--no-spawn", action="store_true")
    parser.add_argument("--steal", help="attach as this node id with a fresh key")
    parser.add_argument("--cafile")
    parser.add_argument("--pool", help="also serve Echo at this address as a pool member")
    args = parser.parse_args()
    identity = Identity.generate(args.steal) if args.steal else None
    ssl_context = client_ssl_context(args.cafile) if args.cafile else None
    token = os.environ.get("FAME_ADMISSION_TOKEN")
    key_text = os.environ.get("FAME_TEST_SENTINEL_KEY")
    sentinel_keys = [parse_public_key(key_text)] if key_text else None
    async with (
        open_storage_from_env(os.environ) as storage,
        fame.open_node(storage_provider=storage) as node,
    ):
        if not args.no_spawn:
            await node.spawn(Echo, "echo@fame.fabric")
            await node.spawn(Echo, "sleepy@fame.fabric")
        if args.pool:
            await node.spawn(Echo, args.pool, pool=True)
        try:
            async with attach(
                node,
                args.url,
                token=token,
                identity=identity,
                ssl_context=ssl_context,
                sentinel_keys=sentinel_keys,
            ) as uplink:
                bound = ",".join(sorted(uplink.bindings.bound)) or "-"
                print("READY", uplink.identity.node_id, bound, flush=True)
                await trio.sleep_forever()
        except fame.AdmissionRefused as exc:
            print("REFUSED", exc.reason, flush=True)


if __name__ == "__main__":
    configure_logging(os.environ)  # FAME_SHOW_ENVELOPES, as the fame programs
    trio.run(main)
