"""``fame status``'s live part: what the running sentinel says about itself.

The pid files say whether the processes run; only the sentinel knows what
is attached and bound. :func:`report` asks it (its admin agent's ``status``,
answered to the admin credential only, see ``fame._cli._live_admin``) and
prints the attached links, each address the project expects
(``FAME_AGENTS``) as bound or ``not bound: <why>``, the other bindings, and
the traffic per address. When the sentinel cannot be asked, it says so and
the caller keeps its offline view (the pids).

:func:`watch` is ``fame status --watch``: on a terminal a table redrawn
every interval (rich), calls per second, latency p50/p99 over the interval
and requests waiting per address; piped, one plain line per address per
interval (for a log or ``grep``). Ctrl-C ends it with status 0.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import trio

import fame
from fame.lowlevel import SENTINEL_ADMIN_ADDRESS, SentinelStatus

from ._interrupt import cancel_on_signal
from ._live_admin import LiveAdminError, call_waiting
from ._settings import SECRETS_FILE, SENTINEL_CONF, client_tls, load_settings, sentinel_url
from ._trust import sentinel_keys

__all__ = ["expected_lines", "report", "watch"]

TIMEOUT = 5.0
"""How long ``fame status`` waits for the sentinel: a frozen one must not hang it."""


def fetch(window: float = 1.0, timeout: float = TIMEOUT) -> SentinelStatus:
    """The running sentinel's status now (raises :class:`LiveAdminError`)."""
    answer = call_waiting("status", timeout, None, window=window)
    return msgspec.convert(answer, SentinelStatus)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def expected_lines(status: SentinelStatus, expected: Sequence[str]) -> tuple[list[str], bool]:
    """A line per expected address (bound, or ``not bound: why``); True if all are bound.

    An address is bound when a node holds it *and* that node is attached:
    bound to a node that is gone (``data/agent`` replaced, the node stopped)
    serves nobody.
    """
    bindings = {b.address: b for b in status.bindings}
    refusals = {r.address: r for r in status.refusals}
    lines, ok = [], True
    for address in expected:
        binding = bindings.get(address)
        if binding is not None and binding.attached:
            lines.append(f"  {address:<32} bound to {', '.join(binding.attached)}")
            continue
        ok = False
        why = []
        if binding is not None:
            held = "a pool of " if binding.pool else ""
            why.append(f"held by {held}{', '.join(binding.owners)}, which is not attached")
        refusal = refusals.get(address)
        if refusal is not None:
            held = f" (held by {refusal.owner})" if refusal.owner else ""
            why.append(f"node {refusal.node_id} was refused: {refusal.reason}{held}")
        if not why:
            why.append("no node asked for it (is the agents' node running?)")
        lines.append(f"  {address:<32} not bound: {'; '.join(why)}")
    return lines, ok


def status_lines(status: SentinelStatus, expected: Sequence[str]) -> tuple[list[str], bool]:
    """The live view as text lines; True if every expected address is bound."""
    lines = [f"live, from sentinel {status.sentinel_id}:"]
    lines.append(f"attached ({len(status.links)}):")
    for link in status.links:
        lines.append(
            f"  {link.node_id}  {link.kind}:{link.name:<12} since {_ago(status.now - link.since)},"
            f" {link.in_flight} in flight, {link.queued_bytes} B queued"
        )
    expected_text, ok = expected_lines(status, expected)
    if expected:
        lines.append("expected (FAME_AGENTS):")
        lines.extend(expected_text)
    lines.append(f"bound ({len(status.bindings)}):")
    for binding in status.bindings:
        kind = "pool " if binding.pool else ""
        state = "" if binding.attached else "  (not attached)"
        lines.append(f"  {binding.address:<32} {kind}{', '.join(binding.owners)}{state}")
    lines.append(
        f"traffic (since the sentinel started; latency over the last {status.window:g} s):"
        f" {status.in_flight} in flight, {status.queued_bytes} B queued"
    )
    for t in status.traffic:
        lines.append(
            f"  {t.address:<32} calls {t.calls}, errors {t.errors}, in flight {t.in_flight},"
            f" p50 {_ms(t.p50)}, p99 {_ms(t.p99)}"
        )
    return lines, ok


def report(expected: Sequence[str], say: Callable[[str], None]) -> bool:
    """Print the live view; False if the sentinel could not be asked or an address is unbound."""
    try:
        status = fetch()
    except LiveAdminError as exc:
        say(f"live view unavailable: {exc} (the lines above are from run/ only)")
        return False
    lines, ok = status_lines(status, expected)
    for line in lines:
        say(line)
    return ok


# -- --watch -------------------------------------------------------------------


class _Rates:
    """Calls per second per address, from the totals of two snapshots."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, int]] | None = None

    def update(self, status: SentinelStatus) -> dict[str, float | None]:
        calls = {t.address: t.calls for t in status.traffic}
        last, self._last = self._last, (status.now, calls)
        if last is None or status.now <= last[0]:
            return dict.fromkeys(calls)
        elapsed = status.now - last[0]
        return {a: (n - last[1].get(a, 0)) / elapsed for a, n in calls.items()}


def watched(status: SentinelStatus) -> list[tuple[str, Any, bool]]:
    """Each address to show: ``(address, its traffic or None, whether anyone serves it)``.

    The addresses called so far and the bound ones not called yet, so that
    an idle agent shows up too (and an address held by a gone node says so);
    not the sentinel's own (its admin agent).
    """
    served = {  # the sentinel's own agents are served in place, not routed: never counted
        b.address: bool(b.attached) for b in status.bindings if b.owners != [status.sentinel_id]
    }
    traffic = {t.address: t for t in status.traffic}
    return [
        (a, traffic.get(a), served.get(a, True)) for a in sorted(served.keys() | traffic.keys())
    ]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plain_lines(status: SentinelStatus, rates: dict[str, float | None]) -> list[str]:
    """One line per address, for ``--watch`` without a terminal."""
    stamp = time.strftime("%H:%M:%S", time.localtime(status.now))
    lines = []
    for address, t, served in watched(status):
        gone = "" if served else " (not attached)"
        if t is None:
            lines.append(f"{stamp} {address} calls/s=0.0 in_flight=0 errors=0 calls=0{gone}")
            continue
        lines.append(
            f"{stamp} {address} calls/s={_rate(rates.get(address))} p50={_ms(t.p50)}"
            f" p99={_ms(t.p99)} in_flight={t.in_flight} errors={t.errors} calls={t.calls}{gone}"
        )
    return lines or [f"{stamp} (nothing bound, no traffic)"]


def _table(status: SentinelStatus, rates: dict[str, float | None], frame: int, note: str) -> Any:
    from rich.table import Table

    table = Table(
        title=f"fame status --watch  #{frame}  sentinel {status.sentinel_id}"
        f"  {len(status.links)} attached",
        caption=note or "Ctrl-C to quit",
    )
    for name in ("address", "calls/s", "p50", "p99", "in flight", "errors", "calls"):
        table.add_column(name, justify="left" if name == "address" else "right")
    for address, t, served in watched(status):
        shown = address if served else f"{address} (not attached)"
        if t is None:
            table.add_row(shown, "0.0", "-", "-", "0", "0", "0")
            continue
        table.add_row(
            shown,
            _rate(rates.get(address)),
            _ms(t.p50),
            _ms(t.p99),
            str(t.in_flight),
            str(t.errors),
            str(t.calls),
        )
    return table


async def _watch(interval: float, draw: Callable[[SentinelStatus | None, str], None]) -> None:
    """Run :func:`_poll` until Ctrl-C (SIGINT), then return.

    SIGINT is an event here (see ``_interrupt``): as trio's KeyboardInterrupt
    it could end the client connection instead, and :func:`_poll` took that
    for a dropped sentinel and reconnected, so Ctrl-C was lost.
    """
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_signal, interrupts, nursery.cancel_scope)
            await _poll(interval, draw)


async def _poll(interval: float, draw: Callable[[SentinelStatus | None, str], None]) -> None:
    """Ask the sentinel every ``interval`` s over one connection; reconnect when it drops."""
    settings = load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True)
    token = settings.get("FAME_ADMIN_TOKEN", "").strip()
    url = sentinel_url(settings)
    while True:
        try:
            async with fame.connect(
                url,
                token=token,
                ssl_context=client_tls(settings),
                sentinel_keys=sentinel_keys(settings),
            ) as node:
                proxy = node.proxy(SENTINEL_ADMIN_ADDRESS).with_timeout(TIMEOUT)
                while True:
                    answer = await proxy.status(window=interval)
                    draw(msgspec.convert(answer, SentinelStatus), "")
                    await trio.sleep(interval)
        except (fame.FameError, OSError) as exc:
            draw(None, f"the sentinel did not answer: {type(exc).__name__}: {exc}; retrying")
            await trio.sleep(interval)


def watch(interval: float = 1.0) -> int:
    """``fame status --watch``: redraw every ``interval`` s until Ctrl-C (status 0)."""
    if not 0.1 <= interval <= 3600:
        print(
            f"fame status: --interval is seconds between 0.1 and 3600, not {interval:g}",
            file=sys.stderr,
        )
        return 2
    try:
        fetch(interval)  # the first answer, or one line saying why there is none
    except LiveAdminError as exc:
        print(f"fame status: {exc}", file=sys.stderr, flush=True)
        return 1
    rates = _Rates()
    try:
        if sys.stdout.isatty():
            _watch_live(interval, rates)
        else:
            _watch_plain(interval, rates)
    except KeyboardInterrupt:
        return 0
    return 0


def _watch_plain(interval: float, rates: _Rates) -> None:
    def draw(status: SentinelStatus | None, note: str) -> None:
        if status is None:
            print(note, flush=True)
            return
        for line in plain_lines(status, rates.update(status)):
            print(line, flush=True)

    trio.run(_watch, interval, draw)


def _watch_live(interval: float, rates: _Rates) -> None:
    from rich.live import Live

    frame = 0
    last: list[SentinelStatus] = []
    with Live(auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:

        def draw(status: SentinelStatus | None, note: str) -> None:
            nonlocal frame
            if status is None:
                if not last:
                    return
                status = last[0]
            else:
                last[:] = [status]
            frame += 1
            live.update(_table(status, rates.update(status), frame, note), refresh=True)

        trio.run(_watch, interval, draw)
