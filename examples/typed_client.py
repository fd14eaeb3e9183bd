"""Typed calls: a proxy that a type checker understands, no plugin needed.

``proxy.call(Agent.op, ...)`` names the operation by its function, so the
checker sees the operation's own parameters and result; ``proxy.stream(
Agent.op, ...)`` does the same for a streaming operation and its items.
This file is checked with ``mypy --strict`` in CI
(``tests/runtime/test_proxy_typing.py``), which also makes sure that a
wrong argument or a wrong use of a result is caught.

Run it with ``python examples/typed_client.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import trio

import fame


class Score(msgspec.Struct, frozen=True):
    """One player's points."""

    player: str
    points: int


class ScoreBoard(fame.BaseAgent):
    """Keeps points per player and streams the ranking."""

    def __init__(self) -> None:
        self._points: dict[str, int] = {}

    @fame.operation
    async def add(self, player: str, points: int) -> Score:
        """Give ``player`` more points; return the new total."""
        total = self._points.get(player, 0) + points
        self._points[player] = total
        return Score(player, total)

    @fame.operation(name="best-player", errors=(LookupError,))
    async def best(self) -> Score:
        """The player with the most points (its wire name is ``best-player``)."""
        if not self._points:
            raise LookupError("no scores yet")
        player = max(self._points, key=lambda name: (self._points[name], name))
        return Score(player, self._points[player])

    @fame.operation(streaming=True)
    async def ranking(self, limit: int = 10) -> AsyncIterator[Score]:
        """The ``limit`` best players, best first."""
        ranked = sorted(self._points.items(), key=lambda item: (-item[1], item[0]))
        for player, points in ranked[:limit]:
            yield Score(player, points)


async def main() -> None:
    async with fame.open_node() as node:
        # spawn returns a Proxy[ScoreBoard]: its call() and stream() accept only
        # ScoreBoard's operations, with their own argument and result types.
        board = await node.spawn(ScoreBoard, "scores@local")

        score: Score = await board.call(ScoreBoard.add, player="ada", points=3)
        print(f"{score.player} has {score.points} points")

        # Calls are coroutines Trio can start: here, three at once.
        async with trio.open_nursery() as nursery:
            for player, points in [("bob", 5), ("ada", 4), ("cy", 1)]:
                nursery.start_soon(board.call, ScoreBoard.add, player, points)

        best = await board.call(ScoreBoard.best)
        print(f"best: {best.player} with {best.points} points")

        # A streaming operation: its items are typed too.
        async with board.stream(ScoreBoard.ranking, limit=2) as ranking:
            async for entry in ranking:
                print(f"  {entry.player:5} {entry.points:3}")

        # Code that knows only the address names the agent class to get the same types.
        same_board = node.proxy("scores@local", ScoreBoard).with_timeout(5)
        total = sum([entry.points async for entry in same_board.stream(ScoreBoard.ranking)])
        print(f"{total} points in all")


if __name__ == "__main__":
    trio.run(main)
