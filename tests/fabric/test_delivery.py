"""``tell``: the outbox survives a SIGKILL, the inbox applies a message once (issue 13).

Real processes and a real sentinel: a sender node with encrypted-sqlite
storage is killed between the write of its outbox and the send, comes
back, and delivers to a target that only then appears; the same request
sent twice with ``once=True`` through a sentinel runs once; a client's
outbox lives in memory and says so.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest
import trio

import fame
from fame._fabric.sentinel._server import open_sentinel
from fame.lowlevel import DeliveryConfig
from fame.storage import MasterKey

from .conftest import Fabric
from .fabric_agents import Counter

QUICK = DeliveryConfig(first_retry=0.01, max_retry=0.1, attempt_timeout=2.0)


def test_the_outbox_survives_a_sigkill_of_the_sender_between_the_write_and_the_send(
    fabric: Fabric, suite_secrets: Any
) -> None:
    _, url = fabric.sentinel()
    key = MasterKey.generate().export()
    suite_secrets.add("master_key", key)
    encrypted = {"FAME_STORAGE_PROFILE": "encrypted-sqlite", "FAME_STORAGE_MASTER_KEY": key}
    sender_env = fabric.env("sender", **encrypted)
    sender_env["FAME_TEST_SENTINEL_KEY"] = fabric.sentinel_keys[url]
    target_env = fabric.env("target", FAME_TEST_SENTINEL_KEY=fabric.sentinel_keys[url])

    # The target is not bound: the message stays in the outbox, attempts fail with no_route.
    sender = fabric.start("delivery_node.py", url, "sender", "--tell", env=sender_env)
    message_id = sender.wait_line("TOLD").split()[1]
    sender.proc.kill()  # SIGKILL: no graceful close, no flush of anything
    sender.proc.wait()
    assert sender.proc.returncode == -9
    assert (fabric.tmp / "sender" / "__delivery_outbox_encrypted_value.db").exists()

    again = fabric.start("delivery_node.py", url, "sender", env=sender_env)
    assert again.wait_line("READY") == "READY 1"  # loaded from the store after the kill
    target = fabric.start("delivery_node.py", url, "target", env=target_env)
    target.wait_line("READY")
    applied = target.wait_line("APPLIED")
    again.wait_line("EMPTY")  # acknowledged: every attempt has ended
    _, request_key, total = applied.split()
    assert request_key.endswith(":" + message_id)
    assert request_key.split(":", 2)[1] == "node"  # scoped by the sender's verified principal
    assert total == "1"
    assert [line for line in target.lines if line.startswith("APPLIED")] == [applied]


async def test_the_same_told_request_sent_twice_through_a_sentinel_runs_once() -> None:
    token = secrets.token_urlsafe(16)
    with trio.fail_after(30):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            counter = Counter()
            await node.spawn(counter, "counter@fame.fabric")
            async with (
                fame.attach(node, url, token=token) as uplink,
                fame.connect(url, token=token) as client,
            ):
                await uplink.wait_bound()
                board = client._switchboard

                async def send(request_id: str, *, once: bool) -> Any:
                    return await board.call(
                        "counter@fame.fabric", "add", {"amount": 1}, 10, request_id=request_id,
                        once=once,
                    )  # fmt: skip

                assert await send("m-1", once=True) == 1  # applied: the operation's answer
                assert await send("m-1", once=True) is None  # a duplicate: acknowledged only
                assert counter.applied == ["14:client:default:m-1"]
                assert await send("m-2", once=True) == 2  # another message runs
                # Without the flag no inbox is asked: a plain call with that id runs again.
                assert await send("m-1", once=False) == 3
                assert await node.proxy("counter@fame.fabric", Counter).total() == 3
                # The id is scoped by the caller: another principal's "m-1" is its own.
                local = await node._switchboard.call(
                    "counter@fame.fabric", "add", {"amount": 1}, 10, request_id="m-1", once=True
                )
                assert local == 4
                assert counter.applied[-1] == "5:local:m-1"


async def test_a_client_outbox_lives_in_memory_delivers_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = secrets.token_urlsafe(16)
    caplog.set_level(logging.WARNING, logger="fame.delivery")
    with trio.fail_after(30):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            counter = Counter()
            await node.spawn(counter, "counter@fame.fabric")
            async with (
                fame.attach(node, url, token=token) as uplink,
                fame.connect(url, token=token, delivery=QUICK) as client,
            ):
                await uplink.wait_bound()
                proxy = client.proxy("counter@fame.fabric", Counter)
                first = await proxy.tell(Counter.add, 1)
                second = await proxy.tell(Counter.add, 2)
                assert first != second
                await client._courier.wait_empty()
                assert sorted(counter.applied) == sorted(
                    f"14:client:default:{message}" for message in (first, second)
                )
                assert await proxy.total() == 3
                assert client._courier.outbox.durable is False
    warnings = [r for r in caplog.records if r.name == "fame.delivery" and "in memory" in r.message]
    assert len(warnings) == 1  # once, at the first tell
