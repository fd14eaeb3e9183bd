"""The sentinel's door under floods: peers that never attach, slowloris, partial frames, EMFILE.

Real sentinels on 127.0.0.1: in this process (to read the door's own
counters, ``sentinel.door``) with a node serving echo, and one ``fame
sentinel`` process whose file limit the test lowers (``prlimit``). Each
attack is followed by a legitimate client that attaches and calls echo:
it must succeed. The assertions are on outcomes (calls answered, counters,
log lines), never on timing; waits are hang guards.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from fabric.fabric_agents import Echo
from trio_websocket import ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

import fame
from fame._cli._settings import SettingError, sentinel_door_limits
from fame._fabric._client import connect
from fame._fabric.sentinel._door import DoorLimits
from fame._fabric.sentinel._server import Sentinel, open_sentinel
from fame._protocol import NodeHandshake
from fame._protocol._identity import Identity
from fame._wire._schema import Welcome

from .conftest import Report
from .fame_services import FameServices, fame_env, run_fame, wait_until
from .hostile_frames import codec
from .hostile_peers import GUARD, LINK_DOWN, attacked_services

TOKEN = "door-test-token-0123456789"
HALF_A_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
KIB = 1024


@contextlib.asynccontextmanager
async def sentinel_with_echo(limits: DoorLimits) -> AsyncIterator[tuple[Sentinel, str]]:
    """An in-process sentinel with ``limits`` and an attached node serving echo."""
    async with open_sentinel(
        port=0, token=TOKEN, trust_on_first_use=True, door_limits=limits, handshake_timeout=GUARD
    ) as sentinel:
        url = f"ws://127.0.0.1:{sentinel.port}/"
        async with fame.open_node() as node, fame.attach(node, url, token=TOKEN):
            await node.spawn(Echo, "echo@fame.fabric")
            yield sentinel, url


async def legitimate_echo(url: str, text: str, token: str = TOKEN) -> str:
    """What a fresh client gets from echo."""
    async with connect(url, token=token) as client:
        return str(await client.proxy("echo@fame.fabric", Echo).with_timeout(GUARD).say(text=text))


async def until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate`` holds (the sentinel runs in this process); a hang guard."""
    with trio.fail_after(GUARD):
        while not predicate():  # noqa: ASYNC110 (state of the sentinel task)
            await trio.sleep(0.01)


class RawPeer:
    """A websocket client on a raw TCP stream: it can send a frame and never finish it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[object] = []

    @classmethod
    async def open(cls, port: int) -> RawPeer:
        peer = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await peer.stream.send_all(peer.ws.send(Request(host="127.0.0.1", target="/")))
        with trio.fail_after(GUARD):
            while not any(isinstance(e, AcceptConnection) for e in peer.events):
                await peer._read()
        return peer

    async def _read(self) -> None:
        data = await self.stream.receive_some(1 << 16)
        if not data:
            raise EOFError("closed by the sentinel")
        self.ws.receive_data(data)
        self.events.extend(self.ws.events())

    async def message(self) -> bytes:
        with trio.fail_after(GUARD):
            while True:
                for i, event in enumerate(self.events):
                    if isinstance(event, BytesMessage):
                        del self.events[: i + 1]
                        return bytes(event.data)
                await self._read()

    async def attach(self) -> None:
        challenge = codec.decode(await self.message())
        attach = NodeHandshake(Identity.generate(), TOKEN, role="client").receive(challenge)
        await self.stream.send_all(self.ws.send(BytesMessage(codec.encode(attach))))  # type: ignore[arg-type]
        assert type(codec.decode(await self.message())) is Welcome

    async def send_unfinished(self, announced: int, sent: int) -> None:
        """A binary frame announcing ``announced`` bytes, of which ``sent`` are sent."""
        # FIN + binary, masked with a zero key (the payload goes as is), 64-bit length.
        header = b"\x82\xff" + announced.to_bytes(8, "big") + b"\x00" * 4
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(header + b"\x00" * sent)

    async def closed_by_sentinel(self) -> bool:
        with trio.fail_after(GUARD):
            try:
                while True:
                    await self._read()
            except (EOFError, trio.BrokenResourceError, OSError):
                return True


async def test_websockets_that_never_attach_do_not_lock_out_a_client(
    reliability_report: Report,
) -> None:
    flood = 300
    limits = DoorLimits(attach_deadline=GUARD)  # only shedding makes room here
    async with sentinel_with_echo(limits) as (sentinel, url):
        door = sentinel.door
        opened = closed = 0

        async def silent(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal opened, closed
            started = False
            try:
                async with open_websocket_url(url, connect_timeout=GUARD) as ws:
                    await ws.get_message()  # the challenge; it never answers
                    opened += 1
                    task_status.started()
                    started = True
                    while True:
                        await ws.get_message()
            except (*LINK_DOWN, ConnectionRejected):
                closed += 1
            if not started:
                task_status.started()

        with trio.fail_after(GUARD * 2):
            async with trio.open_nursery() as attackers:
                for _ in range(flood):
                    await attackers.start(silent)
                # One address: the door holds its newest 32, every other was shed.
                assert door.unattached == limits.max_unattached_per_address
                assert door.shed == flood - limits.max_unattached_per_address
                assert sentinel.refused_connections == 0
                async with connect(url, token=TOKEN) as client:
                    echo = client.proxy("echo@fame.fabric", Echo).with_timeout(GUARD)
                    answer = await echo.say(text="still open")
                    assert sentinel.attached_connections == 2  # the node and the client
                await until(lambda: closed == door.shed)  # each shed peer saw its close
                attackers.cancel_scope.cancel()
    reliability_report(
        never_attaching_websockets=flood,
        opened=opened,
        shed=door.shed,
        legitimate_calls_ok=1,
    )
    assert opened == flood and answer == "still open"


async def test_slowloris_sockets_do_not_lock_out_a_client(reliability_report: Report) -> None:
    flood = 300
    async with sentinel_with_echo(DoorLimits(attach_deadline=GUARD)) as (sentinel, url):
        door = sentinel.door
        before = door.accepted
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(flood):
                stream = await trio.open_tcp_stream("127.0.0.1", sentinel.port)
                stack.push_async_callback(trio.aclose_forcefully, stream)
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(HALF_A_REQUEST)
            await until(lambda: door.accepted - before == flood)
            assert door.unattached <= door.limits.max_unattached_per_address
            assert door.shed >= flood - door.limits.max_unattached_per_address
            answer = await legitimate_echo(url, "past the slow ones")
    reliability_report(slowloris_sockets=flood, shed=door.shed, legitimate_calls_ok=1)
    assert answer == "past the slow ones"


async def test_partial_frames_stay_within_the_budget_and_offenders_are_closed(
    reliability_report: Report,
) -> None:
    budget = 4 * 1024 * KIB
    limits = DoorLimits(
        partial_allowance=64 * KIB,
        partial_budget=budget,
        attach_deadline=GUARD,
        partial_deadline=GUARD,
    )
    announced, sent = 1024 * KIB, 900 * KIB  # under the message limit: only the door stops it
    need = sent - limits.partial_allowance
    strangers, members = 12, 8
    fit_strangers = (budget // 2) // need  # those not attached borrow half the budget at most
    fit_members = (budget - fit_strangers * need) // need
    async with sentinel_with_echo(limits) as (sentinel, url):
        door = sentinel.door
        peers: list[RawPeer] = []
        with trio.fail_after(GUARD * 2):
            for attached in [False] * strangers + [True] * members:
                peer = await RawPeer.open(sentinel.port)
                peers.append(peer)
                if attached:
                    await peer.attach()
                await peer.send_unfinished(announced, sent)
                # The sentinel has read it all: it lent all it needs, or closed it.
                await until(lambda: door.over_budget + door.partial_bytes // need == len(peers))
            assert door.budget.borrowers == fit_strangers + fit_members
            assert door.over_budget == strangers + members - fit_strangers - fit_members
            assert door.peak_partial_bytes <= budget
            answer = await legitimate_echo(url, "small and whole")
            # Those that were closed know it; the others give their loans back as they go.
            for peer in peers:
                await trio.aclose_forcefully(peer.stream)
            await until(lambda: door.partial_bytes == 0 and door.budget.borrowers == 0)
    reliability_report(
        partial_frame_peers=strangers + members,
        bytes_each=sent,
        budget=budget,
        peak_lent=door.peak_partial_bytes,
        closed_over_budget=door.over_budget,
    )
    assert answer == "small and whole"


async def test_a_partial_message_that_stalls_is_closed_after_its_deadline() -> None:
    limits = DoorLimits(partial_allowance=64 * KIB, partial_deadline=1.0)
    async with sentinel_with_echo(limits) as (sentinel, url):
        peer = await RawPeer.open(sentinel.port)
        await peer.attach()
        await peer.send_unfinished(1024 * KIB, 200 * KIB)  # then nothing more
        assert await peer.closed_by_sentinel()
        assert sentinel.door.overdue == 1 and sentinel.door.partial_bytes == 0
        assert await legitimate_echo(url, "after") == "after"


async def test_a_stranger_is_closed_once_it_fails_to_attach_in_time() -> None:
    async with sentinel_with_echo(DoorLimits(attach_deadline=1.0)) as (sentinel, url):
        stream = await trio.open_tcp_stream("127.0.0.1", sentinel.port)
        async with stream:
            await stream.send_all(HALF_A_REQUEST)
            with trio.fail_after(GUARD):
                while await stream.receive_some(4096):
                    pass  # until the door closes it
        assert sentinel.door.expired == 1 and sentinel.door.unattached == 0
        assert await legitimate_echo(url, "on time") == "on time"


async def test_out_of_file_descriptors_logs_one_line_and_recovers(
    fame_services: Callable[..., FameServices], reliability_report: Report
) -> None:
    services = attacked_services(
        fame_services,
        "descriptors",
        # Let unattached connections pile up (one address) until descriptors run out.
        FAME_SENTINEL_MAX_UNATTACHED_PER_ADDRESS="128",
    )
    sentinel = services.sentinel
    in_use = len(os.listdir(f"/proc/{sentinel.pid}/fd"))
    _, hard = resource.prlimit(sentinel.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(sentinel.pid, resource.RLIMIT_NOFILE, (in_use + 48, hard))
    flood = 200
    answer = ""
    attempts = 0
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(flood):
            stream = await trio.open_tcp_stream("127.0.0.1", services.port)
            stack.push_async_callback(trio.aclose_forcefully, stream)
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(HALF_A_REQUEST)

        async def said_so() -> bool:
            return any("cannot accept connections" in line for line in sentinel.log_lines())

        await wait_until(said_so, "the sentinel ran out of descriptors")
        # A legitimate client gets in: its connection waits in the kernel's queue
        # behind the flood, which the door drains by shedding the oldest.
        with trio.fail_after(GUARD * 2):
            while not answer:
                attempts += 1
                with contextlib.suppress(fame.SentinelUnreachable):
                    answer = await legitimate_echo(services.url, "descriptors", services.token)
    lines = sentinel.log_lines()
    warnings = [line for line in lines if "cannot accept connections" in line]
    reliability_report(
        file_limit=in_use + 48,
        slowloris_sockets=flood,
        descriptor_warnings=len(warnings),
        client_attempts=attempts,
        log_lines=len(lines),
    )
    assert answer == "descriptors"
    assert sentinel.running and not sentinel.tracebacks()
    # One line per 10 s at most, each with its count; nothing else about it.
    assert 1 <= len(warnings) <= 6, warnings
    assert len([line for line in lines if "Too many open files" in line]) == len(warnings)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_unattached", 0),
        ("max_unattached_per_address", -1),
        ("attach_deadline", 0.0),
        ("partial_deadline", float("inf")),
        ("partial_budget", -1),
    ],
)
def test_door_limits_are_checked(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"^{field} "):
        DoorLimits(**{field: value})


def test_door_settings_come_from_the_environment_and_name_the_variable() -> None:
    assert sentinel_door_limits({}) == DoorLimits()
    limits = sentinel_door_limits(
        {
            "FAME_SENTINEL_MAX_UNATTACHED": "64",
            "FAME_SENTINEL_MAX_UNATTACHED_PER_ADDRESS": "8",
            "FAME_SENTINEL_ATTACH_DEADLINE": "2.5",
            "FAME_SENTINEL_PARTIAL_FRAME_ALLOWANCE": "4096",
            "FAME_SENTINEL_PARTIAL_FRAME_BUDGET": "1048576",
            "FAME_SENTINEL_PARTIAL_FRAME_DEADLINE": "3",
        }
    )
    assert limits == DoorLimits(
        max_unattached=64,
        max_unattached_per_address=8,
        attach_deadline=2.5,
        partial_allowance=4096,
        partial_budget=1 << 20,
        partial_deadline=3.0,
    )
    for name, bad in (
        ("FAME_SENTINEL_MAX_UNATTACHED", "0"),
        ("FAME_SENTINEL_ATTACH_DEADLINE", "soon"),
        ("FAME_SENTINEL_PARTIAL_FRAME_BUDGET", "32M"),
    ):
        with pytest.raises(SettingError, match=f"^{name}: expected a positive"):
            sentinel_door_limits({name: bad})


def test_a_bad_door_setting_stops_the_sentinel_with_one_line(tmp_path: Path) -> None:
    env = fame_env(
        FAME_ADMISSION_TOKEN="t", FAME_SENTINEL_PORT="0", FAME_SENTINEL_MAX_UNATTACHED="many"
    )
    run = run_fame(tmp_path, "sentinel", env=env)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "fame sentinel: FAME_SENTINEL_MAX_UNATTACHED: expected a positive whole number, got 'many'"
    )
