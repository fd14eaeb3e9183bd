"""Typed proxy calls: ``proxy.call`` / ``proxy.stream`` at run time and under mypy --strict.

The run-time half calls a real node's agent through the typed API and from
a nursery (``nursery.start_soon``). The static half runs mypy --strict on
the user-style example (it must pass) and on small wrong programs (mypy
must name the wrong line and the kind of error).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
import trio

import fame
from fame._storage import StorageConfig, open_storage

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "typed_client.py"


class Record(msgspec.Struct, frozen=True):
    value: str


class Store(fame.BaseAgent):
    """Records in the node's (memory) key-value store."""

    max_concurrency = 8

    async def start(self) -> None:
        self.kv = await self.storage_provider.get_kv_store(Record, "typed")

    @fame.operation
    async def store_value(self, key: str, value: str) -> Record:
        record = Record(value)
        await self.kv.set(key, record)
        return record

    @fame.operation(name="fetch-value")
    async def fetch(self, key: str) -> Record | None:
        found: Record | None = await self.kv.get(key)
        return found

    @fame.operation(streaming=True)
    async def retrieve_all_values(self, prefix: str = "") -> AsyncIterator[tuple[str, Record]]:
        async for key, record in self.kv.scan(prefix):
            yield key, record


class Other(fame.BaseAgent):
    @fame.operation
    async def store_value(self, key: str, value: str) -> Record:
        return Record(value)


async def not_an_operation(agent: Store, key: str) -> Record:
    return Record(key)


@pytest.fixture
async def node() -> AsyncIterator[fame.Node]:
    async with (
        open_storage(StorageConfig(profile="memory")) as storage,
        fame.open_node(storage_provider=storage) as node,
    ):
        yield node


async def test_call_and_stream_return_the_operations_types(node: fame.Node) -> None:
    store = await node.spawn(Store, "store@local")
    with trio.fail_after(10):
        assert await store.call(Store.store_value, key="b", value="2") == Record("2")
        assert await store.call(Store.store_value, "a", "1") == Record("1")
        # The wire name (@operation(name=...)) is what is sent, not the method's name.
        assert await store.call(Store.fetch, key="a") == Record("1")
        assert await store.call(Store.fetch, "missing") is None
        items = [item async for item in store.stream(Store.retrieve_all_values)]
        assert items == [("a", Record("1")), ("b", Record("2"))]
        async with store.stream(Store.retrieve_all_values, prefix="b") as stream:
            assert [item async for item in stream] == [("b", Record("2"))]


class Named(fame.BaseAgent):
    """Operations named like the proxy's own methods."""

    @fame.operation
    async def call(self, x: int) -> int:
        return x + 1

    @fame.operation(streaming=True)
    async def stream(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


async def test_operations_named_call_or_stream_are_reached_through_the_typed_api(
    node: fame.Node,
) -> None:
    named = await node.spawn(Named, "named@local")
    with trio.fail_after(10):
        assert await named.call(Named.call, 1) == 2
        assert [i async for i in named.stream(Named.stream, n=3)] == [0, 1, 2]


async def test_an_untyped_proxy_calls_by_the_functions_wire_name(node: fame.Node) -> None:
    await node.spawn(Store, "store@local")
    untyped = fame.Proxy(node, "store@local")
    with trio.fail_after(10):
        assert await untyped.call(Store.store_value, "k", "v") == Record("v")
        assert await untyped.call(Store.fetch, key="k") == Record("v")
        assert [i async for i in untyped.stream(Store.retrieve_all_values)] == [("k", Record("v"))]


async def test_what_is_not_an_operation_of_the_agent_is_refused_at_once(node: fame.Node) -> None:
    store = await node.spawn(Store, "store@local")
    with pytest.raises(TypeError, match=r"Other\.store_value is not an operation of Store"):
        store.call(Other.store_value, key="k", value="v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not_an_operation is not an operation"):
        store.call(not_an_operation, "k")
    with pytest.raises(TypeError, match="retrieve_all_values is a streaming operation"):
        store.call(Store.retrieve_all_values)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store_value is a plain operation"):
        store.stream(Store.store_value, key="k", value="v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"store_value\(\) takes 2 arguments but 3 were given"):
        store.call(Store.store_value, "k", "v", "extra")  # type: ignore[call-arg]
    with trio.fail_after(10):
        assert await store.call(Store.fetch, key="k") is None  # nothing was sent


async def test_nursery_start_soon_takes_attribute_and_typed_calls(node: fame.Node) -> None:
    store = await node.spawn(Store, "store@local")
    untyped = node.proxy("store@local")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(store.store_value, f"attr/{i}", str(i))
                nursery.start_soon(store.call, Store.store_value, f"typed/{i}", str(i))
            nursery.start_soon(untyped.call, Store.store_value, "untyped/0", "0")
        keys = [key async for key, _ in store.stream(Store.retrieve_all_values)]
    expected = [f"attr/{i}" for i in range(5)] + [f"typed/{i}" for i in range(5)] + ["untyped/0"]
    assert keys == sorted(expected)


async def test_a_call_object_never_awaited_sends_nothing(node: fame.Node) -> None:
    store = await node.spawn(Store, "store@local")
    store.call(Store.store_value, key="k", value="v").close()
    store.store_value(key="k2", value="v")
    with trio.fail_after(10):
        assert await store.call(Store.fetch, "k") is None
        assert await store.call(Store.fetch, "k2") is None


# --- mypy --strict on user code -------------------------------------------------------


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for this module's mypy runs (fame is analysed once), with an empty config."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    (cache / "mypy.ini").write_text("[mypy]\n")
    yield cache


def run_mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` on one file as a user with fame installed would run it.

    fame is found through MYPYPATH (the editable install's import hook is
    invisible to mypy), and ``--follow-imports=silent`` reports only the
    user's file, as for an installed package. The project's own mypy
    settings are not read: only ``--strict`` applies.
    """
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            f"--config-file={cache / 'mypy.ini'}",
            f"--cache-dir={cache}",
            "--no-color-output",
            "--no-error-summary",
            str(path),
        ],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


BAD_HEADER = """\
    from collections.abc import AsyncIterator

    import msgspec

    import fame


    class Record(msgspec.Struct, frozen=True):
        value: str


    class Store(fame.BaseAgent):
        @fame.operation
        async def store_value(self, key: str, value: str) -> Record:
            return Record(value)


    async def use(node: fame.Node) -> None:
        store = await node.spawn(Store, "store@local")
"""


def write_bad(directory: Path, name: str, body: str) -> tuple[Path, int]:
    """A user file whose last line is the mistake; return it and that line's number."""
    text = textwrap.dedent(BAD_HEADER) + textwrap.indent(textwrap.dedent(body), "    ")
    path = directory / name
    path.write_text(text)
    return path, len(text.splitlines())


def errors_of(result: subprocess.CompletedProcess[str], path: Path) -> list[tuple[int, str]]:
    """(line, error code) of each mypy error in ``path``."""
    found = []
    for line in result.stdout.splitlines():
        where, _, rest = line.partition(": error: ")
        if rest and where.startswith(path.name + ":") and rest.endswith("]"):
            found.append((int(where.split(":")[1]), rest[rest.rindex("[") + 1 : -1]))
    return found


def test_mypy_strict_passes_the_typed_client_example(mypy_cache: Path) -> None:
    result = run_mypy(EXAMPLE, mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('await store.call(Store.store_value, key="k", value=42)\n', "arg-type"),
        ('await store.call(Store.store_value, "k")\n', "call-arg"),
        (
            'record = await store.call(Store.store_value, key="k", value="v")\n'
            "record.no_such_field\n",
            "attr-defined",
        ),
        (
            'record = await store.call(Store.store_value, key="k", value="v")\nrecord + 1\n',
            "operator",
        ),
    ],
    ids=["wrong-argument-type", "missing-argument", "no-such-field", "struct-plus-int"],
)
def test_mypy_strict_catches_misuse_of_a_typed_call(
    tmp_path: Path, mypy_cache: Path, body: str, code: str
) -> None:
    path, line = write_bad(tmp_path, "bad_client.py", body)
    result = run_mypy(path, mypy_cache)
    assert result.returncode != 0
    assert errors_of(result, path) == [(line, code)], result.stdout + result.stderr
