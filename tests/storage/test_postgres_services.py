"""``fame node`` on the postgres profile, as real processes: records land in the database.

The node reads ``FAME_STORAGE_PROFILE=postgres`` and the DSN from its
``conf/agent.env`` like any setting. The record a client stores through the node's
``StorageAgent`` is read back through the node after a restart, and the
database holds it sealed.
"""

from __future__ import annotations

from pathlib import Path

from reliability.fame_services import STORAGE_AGENT, FameServices, run_cli

from .postgres_server import PostgresServer


def test_a_node_serves_its_agents_from_postgres(
    tmp_path: Path, postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    # A sentinel in memory enrolls the node at first sight (its identity, like
    # everything the node keeps, is in the database, made at its first start).
    services = FameServices(tmp_path, STORAGE_AGENT, sentinel_storage="memory")
    with (tmp_path / "conf" / "agent.env").open("a") as conf:
        # Later lines win: the node's storage moves to the database.
        conf.write(f'FAME_STORAGE_PROFILE=postgres\nFAME_STORAGE_POSTGRES_DSN="{postgres_dsn}"\n')

    def client(*args: str) -> str:
        done = run_cli(tmp_path, "fame._cli.client", "--url", services.url, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    services.up()
    try:
        client("store", "greeting", "hello-from-postgres")
        assert services.node.stop() == 0
        services.node.start()
        services.node.wait_ready()
        assert "hello-from-postgres" in client("get", "greeting")
    finally:
        services.close()
    assert not (tmp_path / "data" / "agent").exists()  # nothing went to files
    rows = postgres_server.sql("SELECT value FROM fame_kv", postgres_dsn)
    assert rows and all(b"hello-from-postgres" not in bytes(row[0]) for row in rows)
