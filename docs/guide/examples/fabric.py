"""The guide's fabric example: a sentinel, a node serving an agent, and a client, in one program.

Everything the services do, done with the library in one ``trio.run``: the
sentinel admits the node by its enrolled key and the client by a token,
enforces a deny-by-default policy, and routes the client's calls to the
node's agent. Real websockets on 127.0.0.1 (a free port), in-memory storage.
``docs/guide/embedding.md`` quotes this file and ``tests/test_docs.py`` runs it.

Run it with ``python docs/guide/examples/fabric.py``.
"""

from __future__ import annotations

import secrets

import trio

import fame
from fame.lowlevel import NodeStores, load_or_create_identity
from fame.security import Policy
from fame.storage import StorageConfig, open_storage


class Greeter(fame.BaseAgent):
    @fame.operation
    async def greet(self, name: str) -> str:
        return f"Hello, {name}!"

    @fame.operation
    async def reset(self) -> None:
        """Not in the policy: clients may not call it."""


# --8<-- [start:policy]
POLICY = """
[[bind]]
who = ["node:greeter-node"]
addresses = ["greeter@fame.fabric"]

[[call]]
who = ["role:client"]
addresses = ["greeter@fame.fabric"]
operations = ["greet"]
"""
# --8<-- [end:policy]


async def main() -> None:
    token = secrets.token_urlsafe(32)  # the client credential; keep it out of argv and logs
    # --8<-- [start:fabric]
    async with (
        fame.open_sentinel(port=0, token=token, policy=Policy.from_toml(POLICY)) as sentinel,
        open_storage(StorageConfig()) as provider,
        fame.open_node(storage_provider=provider) as node,
    ):
        url = f"ws://127.0.0.1:{sentinel.port}/"
        print(f"sentinel listening on {url}")
        trusted = sentinel.public_keys  # what conf/sentinel.keys holds for the programs

        # The node's identity lives in its own stores; the operator enrolls its key
        # (what `fame enroll NODE_ID KEY` does for a node of another machine).
        identity = await load_or_create_identity(NodeStores(provider))
        await sentinel.enroll(identity.node_id, identity.public_key, name="greeter-node")

        await node.spawn(Greeter, "greeter@fame.fabric")
        async with (
            fame.attach(node, url, sentinel_keys=trusted),
            fame.connect(url, token=token, sentinel_keys=trusted) as client,
        ):
            greeter = client.proxy("greeter@fame.fabric", Greeter)
            for name in ("Ada", "Bob"):
                print("client ->", await greeter.call(Greeter.greet, name=name))
            try:
                await greeter.call(Greeter.reset)
            except fame.errors.PermissionDenied as exc:
                print("refused:", type(exc).__name__, "-", exc)
    # --8<-- [end:fabric]


if __name__ == "__main__":
    trio.run(main)
