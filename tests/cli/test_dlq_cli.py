"""Dead letters: a tell that cannot be delivered lands in ``__delivery_dlq``; ``fame dlq`` sees it.

A node with encrypted-sqlite storage tells an address that never comes
(out of attempts after 3) and an operation that does not exist (refused
for good: dead at once). ``fame dlq`` (a real process, with the node's
settings file) refuses while the node holds its stores, then lists both,
replays one back to the outbox, which the node delivers when it starts
again, and drops the rest.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import attrs
import trio
from fabric.fabric_agents import Counter
from reliability.fame_services import run_fame

import fame
from fame.lowlevel import DeliveryConfig
from fame.storage import MasterKey, open_storage, storage_config_from_env

FEW = DeliveryConfig(max_attempts=3, first_retry=0.01, max_retry=0.02, attempt_timeout=0.5)
MANY = attrs.evolve(FEW, max_attempts=10_000)  # for a run that must not lose the race


def settings_file(root: Path, suite_secrets: Any) -> Path:
    path = root / "node.env"
    path.write_text(
        "FAME_STORAGE_PROFILE=encrypted-sqlite\n"
        f"FAME_STORAGE_DB_DIRECTORY={root / 'data'}\n"
        f"FAME_STORAGE_MASTER_KEY={MasterKey.generate().export()}\n"
    )
    suite_secrets.add_env_file(path)
    return path


def dlq(root: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fame(root, "dlq", *args, "--config", str(config))


def rows(listing: str) -> dict[str, list[str]]:
    """``fame dlq list`` output by message id: to, op, attempts, queued at, last error."""
    lines = listing.splitlines()
    assert lines[0].split("\t") == ["id", "to", "op", "attempts", "queued at", "last error"]
    return {line.split("\t")[0]: line.split("\t")[1:] for line in lines[1:]}


def test_dead_letters_are_listed_replayed_and_dropped(tmp_path: Path, suite_secrets: Any) -> None:
    config_file = settings_file(tmp_path, suite_secrets)
    config = storage_config_from_env(
        dict(line.split("=", 1) for line in config_file.read_text().splitlines())
    )
    told: dict[str, str] = {}

    async def first_run() -> subprocess.CompletedProcess[str]:
        async with (
            open_storage(config) as provider,
            fame.open_node(storage_provider=provider, delivery=FEW) as node,
        ):
            await node.spawn(Counter(), "counter@local")
            told["never"] = await node.tell("nobody@local", "add", {"amount": 1})
            told["unknown"] = await node.tell("counter@local", "nope", {})
            with trio.fail_after(20):
                await node._courier.wait_empty()
            # The node holds its stores: the command refuses and changes nothing.
            return await trio.to_thread.run_sync(
                functools.partial(dlq, tmp_path, config_file, "list")
            )

    busy = trio.run(first_run)
    assert busy.returncode == 1 and "in use" in busy.stderr, busy.stderr
    assert len(busy.stderr.splitlines()) == 1 and "Traceback" not in busy.stderr

    listed = dlq(tmp_path, config_file, "list")
    assert listed.returncode == 0, listed.stderr
    found = rows(listed.stdout)
    assert set(found) == {told["never"], told["unknown"]}
    to, op, attempts, _, error = found[told["never"]]
    assert (to, op, attempts) == ("nobody@local", "add", "3")  # out of attempts
    assert error.startswith("NoRoute:")
    to, op, attempts, _, error = found[told["unknown"]]
    assert (to, op, attempts) == ("counter@local", "nope", "1")  # refused for good: at once
    assert error.startswith("UnknownOperation:")

    missing = dlq(tmp_path, config_file, "replay", "no-such-id")
    assert missing.returncode == 1 and "no dead letter" in missing.stderr
    replayed = dlq(tmp_path, config_file, "replay", told["never"])
    assert replayed.returncode == 0, replayed.stderr
    assert set(rows(dlq(tmp_path, config_file, "list").stdout)) == {told["unknown"]}

    async def second_run() -> list[str | None]:
        counter = Counter()
        async with (
            open_storage(config) as provider,
            fame.open_node(storage_provider=provider, delivery=MANY) as node,
        ):
            assert len(node._courier.outbox) == 1  # loaded from the store at start
            await node.spawn(counter, "nobody@local")  # the address came, at last
            with trio.fail_after(20):
                await node._courier.wait_empty()
        return counter.applied

    assert trio.run(second_run) == [f"5:local:{told['never']}"]

    dropped = dlq(tmp_path, config_file, "drop", "--all")
    assert dropped.returncode == 0, dropped.stderr
    after = dlq(tmp_path, config_file, "list")
    assert after.returncode == 0 and after.stdout.startswith("no dead letters"), after.stdout
