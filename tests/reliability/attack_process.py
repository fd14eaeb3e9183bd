"""Run one attack of :mod:`resource_attackers` in a process of its own.

An attacker of thousands of sockets in the test's own process starves the
legitimate client beside it of CPU: in the slowloris row beside two CPU
hogs, the test process (3,000 dripping sockets *and* the legitimate
client) ran at 80% of a core while the sentinel used 12%, and the
legitimate calls were slow for lack of their own process's time (the same
for 1,100 websockets that never attach). That
measures the harness, not the sentinel; a real attacker runs on its own
machine. :func:`in_own_process` wraps an attack so that it runs in a child
``python -m reliability.attack_process NAME``:

- the child's argument is a JSON object (the services' port, url and
  token, and the attack's sizes);
- it prints one JSON line ``{"event": "in_place", ...}`` once the attack is
  in place, keeps it up until its standard input closes (the block ended,
  or the memory watch set ``stop``), then prints ``{"event": "done",
  "tally": ...}`` and exits 0;
- the parent copies that tally into its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from .resource_attackers import ATTACKS, GUARD, Tally

__all__ = ["in_own_process"]

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
IN_PLACE_LIMIT = GUARD * 3  # thousands of sockets on a starved machine take a while


class _Lines:
    """The JSON lines of a child's standard output."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                raise RuntimeError(f"the attack process ended early: {self._buffer[-500:]!r}")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        parsed: dict[str, Any] = json.loads(line)
        return parsed


def in_own_process(
    attack: Callable[..., AbstractAsyncContextManager[Tally]],
) -> Callable[..., AbstractAsyncContextManager[Tally]]:
    """``attack`` (one of :data:`ATTACKS`), run in a child process; same signature."""
    name = next(key for key, value in ATTACKS.items() if value is attack)

    @asynccontextmanager
    async def run(
        services: Any, tally: Tally, stop: trio.Event, **size: Any
    ) -> AsyncIterator[Tally]:
        spec = {"port": services.port, "url": services.url, "token": services.token, "size": size}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "reliability.attack_process", name, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(TESTS),
            env=env,
        )
        assert process.stdin is not None and process.stdout is not None
        lines = _Lines(process.stdout)
        try:
            with trio.fail_after(IN_PLACE_LIMIT):
                first = await lines.next()
            assert first["event"] == "in_place", first
            async with trio.open_nursery() as watching:

                async def relay_stop() -> None:
                    await stop.wait()
                    await process.stdin.aclose()  # type: ignore[union-attr]

                watching.start_soon(relay_stop)
                yield tally
                watching.cancel_scope.cancel()
            await process.stdin.aclose()
            with trio.fail_after(GUARD):
                done = await lines.next()
                await process.wait()
            for key, value in done["tally"].items():
                if key == "aborted":
                    tally.aborted = tally.aborted or value  # the memory watch is ours
                else:
                    setattr(tally, key, value)
            tally.extra["attacker_process"] = True
        finally:
            if process.returncode is None:
                process.kill()
                with trio.move_on_after(GUARD):
                    await process.wait()

    return run


async def _child(name: str, spec: dict[str, Any]) -> None:
    services = SimpleNamespace(port=spec["port"], url=spec["url"], token=spec["token"])
    tally, stop = Tally(), trio.Event()
    stdin = trio.lowlevel.FdStream(os.dup(0))
    async with ATTACKS[name](services, tally, stop, **spec["size"]):
        print(json.dumps({"event": "in_place", "tally": tally.figures()}), flush=True)
        while await stdin.receive_some(4096):
            pass  # the parent closes it to end the attack
        stop.set()
    print(json.dumps({"event": "done", "tally": asdict(tally)}), flush=True)


if __name__ == "__main__":
    trio.run(_child, sys.argv[1], json.loads(sys.argv[2]))
