"""The guide's agent: operations, a stream, declared errors, retries, storage and state.

A small ledger of accounts, run on a node with encrypted storage in a
temporary directory. Every section of ``docs/guide/agents.md`` quotes this
file, and ``tests/test_docs.py`` runs it and checks what it prints.

Run it with ``python docs/guide/examples/ledger.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import trio

import fame
from fame.security import request_key
from fame.storage import MasterKey, StorageConfig, open_storage


# --8<-- [start:models]
class Account(msgspec.Struct):
    """One account as stored: its owner and balance in cents."""

    owner: str
    cents: int = 0


class LedgerState(msgspec.Struct):
    """The agent's own durable state: how many withdrawals it paid."""

    withdrawals: int = 0


class InsufficientFunds(Exception):
    """A withdrawal larger than the balance: the caller's mistake, not a bug."""


# --8<-- [end:models]


# --8<-- [start:agent]
class Ledger(fame.BaseAgent):
    """Accounts kept in the node's encrypted key-value store."""

    state_model = LedgerState  # what self.state() reads and writes
    accounts: Any = None

    async def start(self) -> None:
        # The node attaches its storage provider before start() runs.
        self.accounts = await self.storage_provider.get_kv_store(Account, "ledger")

    @fame.operation(idempotent=True)
    async def open_account(self, key: str, owner: str) -> Account:
        """Create the account if it does not exist; running it twice changes nothing more."""
        account = await self.accounts.get(key)
        if account is None:
            account = Account(owner)
            await self.accounts.set(key, account)
        return account

    @fame.operation(deduplicated=True, errors=(fame.storage.KeyMissing,))
    async def deposit(self, key: str, cents: int) -> int:
        """Add to a balance, once per request id however often the call is sent."""
        account = await self.accounts.get(key)
        if account is None:
            raise fame.storage.KeyMissing("ledger", key)
        account.cents += cents
        # The request id, scoped by the verified caller, goes into the write's
        # transaction: a retry writes nothing and set_versioned returns the
        # account as the first attempt stored it, so the answer is the same.
        stored = await self.accounts.set_versioned(key, account, request_id=request_key())
        return int(stored.value.cents)

    @fame.operation(errors=(InsufficientFunds,))
    async def withdraw(self, key: str, cents: int) -> int:
        """Take from a balance; a declared error if it is too small."""
        async with self.state() as state:  # written back only if the block succeeds
            account = await self.accounts.get(key)
            if account is None or account.cents < cents:
                raise InsufficientFunds(f"{key} cannot pay {cents}")
            account.cents -= cents
            await self.accounts.set(key, account)
            state.withdrawals += 1
            return int(account.cents)

    @fame.operation(idempotent=True)
    async def withdrawals_paid(self) -> int:
        """How many withdrawals this agent paid, across restarts of the node."""
        async with self.state() as state:
            return state.withdrawals

    @fame.operation(streaming=True)
    async def statement(self, prefix: str = "") -> AsyncIterator[tuple[str, Account]]:
        """Every account whose key starts with ``prefix``, in key order, paged."""
        async for key, account in self.accounts.scan(prefix):
            yield key, account


# --8<-- [end:agent]


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        config = StorageConfig(
            profile="encrypted-sqlite", directory=Path(directory), master_key=MasterKey.generate()
        )
        # --8<-- [start:calls]
        async with (
            open_storage(config) as provider,
            fame.open_node(storage_provider=provider) as node,
        ):
            ledger = await node.spawn(Ledger, "ledger@local")
            await ledger.open_account(key="acct/ada", owner="Ada")
            await ledger.open_account(key="acct/bob", owner="Bob")
            print("deposit ->", await ledger.deposit(key="acct/ada", cents=500))

            # The same request id twice: applied once, the first answer replayed.
            once = ledger.with_request_id("deposit-0001")
            print("retry 1 ->", await once.deposit(key="acct/bob", cents=250))
            print("retry 2 ->", await once.deposit(key="acct/bob", cents=250))

            print("withdraw ->", await ledger.withdraw(key="acct/ada", cents=120))
            try:
                await ledger.withdraw(key="acct/bob", cents=10_000)
            except fame.OperationFailed as exc:
                print("declared error:", exc.exc_type)
            try:
                await ledger.deposit(key="acct/ada", cents="lots")
            except fame.InvalidArguments as exc:
                print("invalid arguments:", exc)

            async for key, account in ledger.statement(prefix="acct/"):
                print(f"  {key} {account.owner} {account.cents}")
        # --8<-- [end:calls]

        # --8<-- [start:reopen]
        async with (
            open_storage(config) as provider,
            fame.open_node(storage_provider=provider) as node,
        ):
            ledger = await node.spawn(Ledger, "ledger@local")
            print("after a restart, withdrawals paid:", await ledger.withdrawals_paid())
        # --8<-- [end:reopen]


if __name__ == "__main__":
    trio.run(main)
