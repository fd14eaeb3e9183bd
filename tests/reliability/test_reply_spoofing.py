"""An admitted peer cannot forge or redirect another caller's answers.

Holding the token admits a peer, but not as anybody else: the sentinel
forwards an answer (reply, stream item, error) only from the link its
request went to, and a request, credit or cancel only if its ``reply_to``
is the sender's own reply address. The attacker here is attached by hand
over a real websocket to a real in-process sentinel; the victim is a
``fame.connect`` client calling an agent on another attached node.
"""

from __future__ import annotations

import secrets

import trio
from trio_websocket import open_websocket_url

import fame
from fame._fabric.sentinel._server import open_sentinel
from fame._wire._schema import Envelope, LinkError, Reply, Request

from .conftest import Report
from .hostile_frames import codec
from .hostile_peers import attach_raw, next_frame

FORGED_CORRS = range(64)  # clients used to number their calls from 1; now they draw 63 bits


class Slow(fame.BaseAgent):
    """Answers only when the test lets it, so the victim's call stays pending."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.called = trio.Event()
        self.calls = 0

    @fame.operation
    async def answer(self) -> str:
        self.calls += 1
        self.called.set()
        await self.release.wait()
        return "genuine"


async def test_a_peer_cannot_forge_or_redirect_another_callers_answers(
    reliability_report: Report,
) -> None:
    token = secrets.token_urlsafe(16)
    slow = Slow()
    async with (
        open_sentinel(port=0, trust_on_first_use=True, token=token) as sentinel,
        fame.open_node() as agent_node,
    ):
        url = f"ws://127.0.0.1:{sentinel.port}/"
        await agent_node.spawn(slow, "slow@fame.fabric")
        async with (
            fame.attach(agent_node, url, token=token),
            fame.connect(url, token=token) as victim,
            open_websocket_url(url) as attacker,
            trio.open_nursery() as tasks,
        ):
            await attach_raw(attacker, token)
            results: list[str] = []
            answered = trio.Event()

            async def victim_call() -> None:
                results.append(await victim.proxy("slow@fame.fabric").answer())
                answered.set()

            tasks.start_soon(victim_call)
            with trio.fail_after(10):
                await slow.called.wait()
            [victim_corr] = victim._switchboard.pending
            dropped_before = sentinel.router.routing.dropped_answers

            # 1. Forged replies to every plausible pending call of the victim.
            for corr in FORGED_CORRS:
                forged = Envelope(0, victim.reply_address, 0, Reply("forged"), None, corr)
                await attacker.send_message(codec.encode(forged))
            # 2. A request whose answer would land at the victim's reply address.
            redirected = Request("answer", {}, False, 0, 5000)
            await attacker.send_message(
                codec.encode(
                    Envelope(0, "slow@fame.fabric", 1, redirected, victim.reply_address, 1)
                )
            )
            refusal = await next_frame(attacker)
            # The forged replies were dropped before the refusal was sent.
            dropped = sentinel.router.routing.dropped_answers - dropped_before

            slow.release.set()
            with trio.fail_after(10):
                await answered.wait()
            tasks.cancel_scope.cancel()

    assert results == ["genuine"]
    assert victim_corr not in FORGED_CORRS  # no longer guessable
    assert dropped == len(FORGED_CORRS)
    assert type(refusal) is LinkError
    assert "reply_to is not this link's own reply address" in refusal.reason
    assert slow.calls == 1  # the redirected request never reached the agent
    reliability_report(
        forged_replies=len(FORGED_CORRS),
        forged_replies_dropped=dropped,
        redirected_requests_refused=1,
        victim_result=results[0],
    )
