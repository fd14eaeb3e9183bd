"""Two nodes whose agents share one postgres store: the issue's pool members, in one process.

Each node has its own provider (its own pool and storage actors) on the same
database and master key, as two machines would; each runs the same agent at
the same address. Deposits sent through both at once, with request ids and
conditional writes, lose nothing and apply nothing twice.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
import trio

import fame
from fame.security import request_key
from fame.storage import MasterKey, StorageConfig, VersionConflict, open_storage


class Account(msgspec.Struct):
    cents: int = 0


class Bank(fame.BaseAgent):
    accounts: Any = None

    async def start(self) -> None:
        self.accounts = await self.storage_provider.get_kv_store(Account, "bank")

    @fame.operation(deduplicated=True)
    async def deposit(self, key: str, cents: int) -> int:
        """Add to a balance: conditional on the version read, retried on a conflict."""
        while True:
            got = await self.accounts.get_versioned(key)
            account = Account() if got is None else got.value
            try:
                stored = await self.accounts.set_versioned(
                    key,
                    Account(account.cents + cents),
                    if_version=0 if got is None else got.version,
                    request_id=request_key(),
                )
            except VersionConflict:
                continue
            return int(stored.value.cents)

    @fame.operation(idempotent=True)
    async def balance(self, key: str) -> int:
        account = await self.accounts.get(key)
        return 0 if account is None else int(account.cents)


async def test_two_nodes_share_one_store(postgres_dsn: str) -> None:
    master = MasterKey.generate()
    config = StorageConfig(profile="postgres", postgres_dsn=postgres_dsn, master_key=master)
    async with (
        open_storage(config) as first,
        open_storage(config) as second,
        fame.open_node(storage_provider=first) as one,
        fame.open_node(storage_provider=second) as two,
    ):
        banks = [await one.spawn(Bank, "bank@local"), await two.spawn(Bank, "bank@local")]

        async def deposits(n: int) -> None:
            for i in range(10):
                await banks[(n + i) % 2].deposit(key="acct", cents=1)

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(deposits, n)
        assert await banks[0].balance(key="acct") == 60
        assert await banks[1].balance(key="acct") == 60

        # One request id through both nodes at once: applied once, one answer.
        answers: list[int] = []
        request_id = "deposit-" + secrets.token_hex(4)

        async def once(n: int) -> None:
            answers.append(
                await banks[n % 2].with_request_id(request_id).deposit(key="acct", cents=5)
            )

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(once, n)
        assert answers == [65] * 4
        assert await banks[1].balance(key="acct") == 65
