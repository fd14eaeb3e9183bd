"""Connection limits of a real sentinel: a flood past max_connections, peers that never attach.

The sentinel (and, for the flood, a node serving echo) are real ``fame``
processes on 127.0.0.1. Past ``FAME_SENTINEL_MAX_CONNECTIONS`` a new
websocket gets HTTP 503 with the reason, attached peers do not notice, and
closing connections makes room again; connections that never attach (raw
TCP, half a request, a websocket that stays silent) do not count toward
that limit and are closed after ``FAME_SENTINEL_HANDSHAKE_TIMEOUT``. Bad
values of both settings stop the sentinel with one line naming the
variable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from fame._cli._settings import SettingError, positive_setting
from fame._fabric._client import connect
from fame._fabric._transport import SentinelUnreachable

from .conftest import Report
from .fame_services import FameServices, fame_env, run_fame
from .hostile_peers import GUARD, WellBehaved, attacked_services, open_attached, refusal


async def test_connection_flood_is_refused_past_the_limit_and_recovers(
    fame_services: Callable[..., FameServices], reliability_report: Report
) -> None:
    limit = 32
    services = attacked_services(
        fame_services,
        "flood",
        FAME_SENTINEL_MAX_CONNECTIONS=str(limit),
    )  # the node is connection 1
    sentinel, url = services.sentinel, services.url
    opened = 2  # the node and the client
    refused = refused_while_freeing = 0

    async with connect(url, token=services.token) as client:  # connection 2
        good = WellBehaved(client)
        with trio.fail_after(GUARD):
            async with contextlib.AsyncExitStack() as flood:
                links = await open_attached(url, services.token, limit - 2, flood)
                opened += len(links)
                # Full: the next one gets a 503 with the reason, raw or through fame.
                rejected = await refusal(url)
                refused += 1
                assert rejected.status_code == 503
                assert (
                    rejected.body
                    == f"too many connections: this sentinel serves at most {limit}".encode()
                )
                with pytest.raises(SentinelUnreachable) as info:
                    async with connect(url, token=services.token):
                        pass
                refused += 1
                message = str(info.value)
                assert "\n" not in message
                assert message.endswith(
                    f"(HTTP 503): too many connections: this sentinel serves at most {limit}"
                ), message
                # The attached node and client do not notice.
                assert await good.echo.say(text="still here") == "still here"
                await good.still_fine()
                # Closing some makes room for exactly as many again.
                for ws in links[:5]:
                    await ws.aclose()
                for _ in range(5):
                    for _ in range(500):  # the sentinel notices a close asynchronously
                        try:
                            await open_attached(url, services.token, 1, flood)
                        except ConnectionRejected:
                            refused_while_freeing += 1
                            await trio.sleep(0.02)
                            continue
                        opened += 1
                        break
                    else:
                        raise AssertionError("closing connections did not make room")
                await refusal(url)
                refused += 1
                assert await good.echo.say(text="and now") == "and now"
    reliability_report(
        max_connections=limit,
        connections_opened=opened,
        connections_refused=refused + refused_while_freeing,
        sentinel_crashes=0 if sentinel.running else 1,
        peak_sentinel_rss_mib=round(sentinel.peak_rss_mib(), 1),
    )
    assert sentinel.running and not sentinel.tracebacks()
    # The first refusal is logged once, not one line per refused connection.
    assert len([line for line in sentinel.log_lines() if "refusing connections" in line]) == 1


async def test_connections_that_never_attach_are_closed_after_the_handshake_timeout(
    fame_services: Callable[..., FameServices], reliability_report: Report
) -> None:
    limit, timeout = 8, 1.0
    services = attacked_services(
        fame_services,
        "idle",
        node=False,
        FAME_SENTINEL_MAX_CONNECTIONS=str(limit),
        FAME_SENTINEL_HANDSHAKE_TIMEOUT=str(timeout),
        # All of them wait at once, from one address: none is shed to make room.
        FAME_SENTINEL_MAX_UNATTACHED_PER_ADDRESS=str(8 * limit),
    )
    sentinel, url, port = services.sentinel, services.url, services.port

    closed_after: dict[str, list[float]] = {}

    async def closed_by_sentinel(ws: WebSocketConnection, started: float) -> None:
        # ``started`` is when this client began to connect: no later than the
        # sentinel's own clock for the connection started, so the time measured
        # here is never shorter than the time the sentinel let it live.
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.get_message()  # the challenge, then nothing until the close
        closed_after.setdefault("websocket, no attach", []).append(trio.current_time() - started)

    async def raw_tcp(kind: str, payload: bytes) -> None:
        started = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(payload)
            while await stream.receive_some(4096):
                pass  # whatever the server says before closing (nothing, or an error)
        closed_after.setdefault(kind, []).append(trio.current_time() - started)

    raw = {
        "tcp, silent": b"",
        "tcp, half a request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "tcp, not http": b"\x16\x03\x01\x02\x00",
    }

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            # Raw TCP that never finishes the websocket handshake: closed, never counted.
            for kind, payload in raw.items():
                for _ in range(limit):
                    nursery.start_soon(raw_tcp, kind, payload)
            async with contextlib.AsyncExitStack() as stack:
                silent: list[tuple[WebSocketConnection, float]] = []
                for _ in range(limit):
                    started = trio.current_time()
                    ws = await stack.enter_async_context(
                        open_websocket_url(url, connect_timeout=GUARD)
                    )
                    silent.append((ws, started))
                # Websockets that never attach do not count toward the limit (the
                # door bounds them apart): one more opens and gets its challenge.
                async with open_websocket_url(url, connect_timeout=GUARD) as extra:
                    assert await extra.get_message()
                async with trio.open_nursery() as waiting:
                    for ws, started in silent:
                        waiting.start_soon(closed_by_sentinel, ws, started)
            # Freed: a real client attaches (the raw TCP connections did not count).
            for _ in range(200):
                try:
                    async with connect(url, token=services.token):
                        break
                except SentinelUnreachable:
                    await trio.sleep(0.05)
            else:
                raise AssertionError("no room after the silent connections were closed")
    reliability_report(
        handshake_timeout_s=timeout,
        idle_connections_closed=sum(map(len, closed_after.values())),
        slowest_close_s=round(max(max(times) for times in closed_after.values()), 2),
        sentinel_crashes=0 if sentinel.running else 1,
    )
    assert {kind: len(times) for kind, times in closed_after.items()} == {
        "tcp, silent": limit,
        "tcp, half a request": limit,
        "tcp, not http": limit,  # a bad request is closed at once
        "websocket, no attach": limit,
    }
    # Those that wait were closed by the timeout, not sooner (the guard bounds "later").
    for kind in ("tcp, silent", "tcp, half a request", "websocket, no attach"):
        assert min(closed_after[kind]) >= timeout * 0.9, (kind, closed_after[kind])
    assert sentinel.running and not sentinel.tracebacks()


def test_connection_settings_are_checked_and_name_the_variable() -> None:
    name = "FAME_SENTINEL_MAX_CONNECTIONS"
    assert positive_setting({}, name, 1024, int) == 1024
    assert positive_setting({name: " 32 "}, name, 1024, int) == 32
    timeout = "FAME_SENTINEL_HANDSHAKE_TIMEOUT"
    assert positive_setting({timeout: "0.5"}, timeout, 10.0, float) == 0.5
    for bad in ("0", "-3", "many", "1.5"):
        with pytest.raises(SettingError, match=f"^{name}: expected a positive whole number"):
            positive_setting({name: bad}, name, 1024, int)
    for bad in ("0", "nan", "inf", "-1"):
        with pytest.raises(SettingError, match=f"^{timeout}: expected a positive number"):
            positive_setting({timeout: bad}, timeout, 10.0, float)


def test_a_bad_connection_setting_stops_the_sentinel_with_one_line(tmp_path: Path) -> None:
    env = fame_env(
        FAME_ADMISSION_TOKEN="t", FAME_SENTINEL_PORT="0", FAME_SENTINEL_MAX_CONNECTIONS="lots"
    )
    run = run_fame(tmp_path, "sentinel", env=env)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "fame sentinel: FAME_SENTINEL_MAX_CONNECTIONS: expected a positive whole number, got 'lots'"
    )
