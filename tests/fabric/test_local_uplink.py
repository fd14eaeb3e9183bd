"""The sentinel's own uplink: what its agents see when a link goes away under them."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import fame
from fame._fabric._identity import NodeStores
from fame._fabric._link_queue import LinkQueue
from fame._fabric.sentinel._local_uplink import SentinelUplink
from fame._fabric.sentinel._routing import Conn, Router
from fame._protocol import SentinelLink, SentinelPolicy
from fame._wire._schema import Codec, Envelope, StreamItem


async def test_a_link_closed_under_a_send_is_no_route_for_the_sender() -> None:
    # A caller killed while the sentinel's own agent streams to it: the item's
    # send meets a closed queue. That must reach the agent as NoRoute (its
    # answer is dropped, as for any uplink), not crash the sentinel's node.
    async with fame.open_node() as node:
        router = Router(node, Codec(), "nsentinel")
        policy = SentinelPolicy("nsentinel", (), {}, router.routes, open_admission=True)
        ws: Any = None  # the queue is all send() touches
        conn = Conn(ws, SentinelLink(policy, b"n" * 32), LinkQueue(1))
        router.routes.link("ncaller", "ncaller", conn)
        assert router.routes.bind("_reply@ncaller", "ncaller").ok
        uplink = SentinelUplink(router, NodeStores())
        item = Envelope(0, "_reply@ncaller", 1, StreamItem(1), None, 7)
        await uplink.send(item)  # room for one
        conn.out_recv.close()  # the link's writer is gone
        with trio.fail_after(5), pytest.raises(fame.NoRoute):
            await uplink.send(item)
