"""The test server itself: it starts, answers, and keeps each test's tables apart."""

from __future__ import annotations

from .postgres_server import PostgresServer


def test_the_server_answers_in_a_schema_of_its_own(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    postgres_server.sql("CREATE TABLE probe (n integer)", postgres_dsn)
    postgres_server.sql("INSERT INTO probe VALUES (1)", postgres_dsn)
    assert postgres_server.sql("SELECT n FROM probe", postgres_dsn) == [(1,)]
    other = postgres_server.new_dsn()
    assert postgres_server.sql("SELECT to_regclass('probe') IS NULL", other) == [(True,)]
