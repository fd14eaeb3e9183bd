"""Secrets never leak: not in a log line, an error message or a repr; secrets.env is 0600.

The whole run is scanned at its end, over every worker's files and every
captured output, by ``tests/conftest.py`` (:mod:`secret_scan`): a secret
found there fails the run. Here :func:`test_no_secret_in_the_logs_of_the_error_paths`
drives the error paths that could leak and scans what they wrote itself,
so the check means something whatever else ran: a sentinel and the
storage agent with a fresh master key and token, clients with a wrong
token (in process and ``fame-client``), ``fame check``/``dump``/``inspect``
and ``fame node`` with a wrong master key, bad settings, and
``repr``/``str``/tracebacks of the config, key and error objects, with
fame's loggers at DEBUG. It fails if it scanned too little to mean
anything, and reports how many files, bytes and secrets it checked.
(``test_secrets_env_modes.py`` checks that the file holding them is
private.)
"""

from __future__ import annotations

import base64
import logging
import secrets
import traceback
from pathlib import Path
from typing import Any

import trio
from secret_scan import build_needles, scan

import fame
from agents.storage_agent import StorageAgent
from fame._storage import open_storage, parse_master_key, storage_config_from_env
from fame._storage._keys import file_key as find_key
from fame._storage._namespace import ENCRYPTED_SUFFIX

from .fame_services import STORAGE_AGENT, FameServices, run_cli, run_fame

# Floors that keep the check from passing vacuously (the scenario alone exceeds them).
MIN_LOG_FILES = 5
MIN_BYTES = 4096


def test_the_grep_finds_a_secret_in_every_encoding(tmp_path: Path) -> None:
    """The scanner itself works: a planted key is found however it is written."""
    text = secrets.token_urlsafe(32)
    key = parse_master_key(text)
    # A file with a header salt, as SQLCipher writes one: its key depends on it.
    path = tmp_path / ("ns" + ENCRYPTED_SUFFIX)
    path.write_bytes(secrets.token_bytes(4096))
    file_key = find_key(key, path)[:32]
    needles = build_needles([text], ["tok-" + secrets.token_urlsafe(24)], {path})
    assert needles.counts == {"derived_keys": 1, "master_keys": 1, "tokens": 1}
    token = next(t for t in (w.decode() for w in needles.words) if t.startswith("tok-"))
    planted = [
        f"FAME_STORAGE_MASTER_KEY={text}\n".encode(),
        f"PRAGMA key = \"x'{file_key.hex()}'\"".encode(),
        f"key={file_key.hex().upper()};".encode(),
        b"blob " + base64.b64encode(file_key) + b" end",
        base64.urlsafe_b64encode(key._material).rstrip(b"=") + b"!",
        f"MasterKey({key._material!r})".encode(),
        b"\x00raw" + file_key + b"\x00",
        f'{{"token": "{token}"}}'.encode(),
    ]
    for data in planted:
        assert needles.find(data), data
    assert not needles.find(b"nothing to see here " + secrets.token_hex(32).encode())


# --- the scenario ------------------------------------------------------------------


def _write(log: Any, title: str, text: str) -> None:
    log.write(f"--- {title}\n{text}\n")


async def _exercise(services: FameServices, log: Any) -> None:
    """Calls and client errors against the running services, every outcome logged."""
    async with fame.connect(services.url, token=services.token) as client:
        agent = client.proxy("storage@fame.fabric")
        _write(log, "store", repr(await agent.store_value(key="k", value="v")))
        _write(log, "list", repr([pair async for pair in agent.retrieve_all_values()]))
        for op, args in (("store_value", {"key": 1}), ("no_such_op", {})):
            try:
                await getattr(agent, op)(**args)
            except fame.FameError as exc:
                _write(log, f"{op} error", f"{exc!s} | {exc!r}\n{traceback.format_exc()}")
    try:
        async with fame.connect(services.url, token=secrets.token_urlsafe(32)):
            pass
    except fame.AdmissionRefused as exc:
        _write(log, "wrong token", f"{exc!s} | {exc!r}\n{traceback.format_exc()}")


async def _fabric_in_process(root: Path, registry: Any, log: Any) -> None:
    """A sentinel and a storage node in this process, fame's loggers at DEBUG.

    Every log line fame writes on these paths (attach, bind, refusals, a
    dropped stream, detach, a node stopping) goes to ``run/in-process.log``.
    """
    token = secrets.token_urlsafe(32)
    registry.add("token", token)
    keys = {name: secrets.token_urlsafe(32) for name in ("sentinel", "node")}
    for key in keys.values():
        registry.add("master_key", key)

    def config(name: str) -> fame.storage.StorageConfig:
        return fame.storage.StorageConfig(
            profile="encrypted-sqlite",
            directory=root / "data" / f"in-process-{name}",
            master_key=parse_master_key(keys[name]),
        )

    async with (
        open_storage(config("sentinel")) as sentinel_storage,
        fame.open_sentinel(
            port=0, trust_on_first_use=True, token=token, storage_provider=sentinel_storage
        ) as sentinel,
    ):
        url = f"ws://127.0.0.1:{sentinel.port}/"
        async with (
            open_storage(config("node")) as node_storage,
            fame.open_node(storage_provider=node_storage) as node,
        ):
            # Spawned before attaching, so entering attach() waits until the
            # sentinel confirmed the binding (a later spawn binds asynchronously).
            await node.spawn(StorageAgent, "storage@in.process")
            async with fame.attach(node, url, token=token):
                async with fame.connect(url, token=token) as client:
                    agent = client.proxy("storage@in.process", StorageAgent)
                    for i in range(100):
                        await agent.store_value(key=f"k{i}", value="v")
                    async for _ in agent.retrieve_all_values():
                        break  # dropped mid-stream: cancelled
                    _write(log, "in-process provider", f"{node_storage!r} | {config('node')!r}")
                for wrong in (secrets.token_urlsafe(32), ""):
                    try:
                        async with fame.connect(url, token=wrong):
                            pass
                    except fame.AdmissionRefused as exc:
                        _write(log, "in-process wrong token", f"{exc!r}\n{traceback.format_exc()}")
                await node.stop_agent("storage@in.process")


async def _wrong_key_in_process(directory: Path, wrong: str, log: Any) -> None:
    env = {
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_DB_DIRECTORY": str(directory),
        "FAME_STORAGE_MASTER_KEY": wrong,
    }
    config = storage_config_from_env(env)
    _write(log, "config", f"{config!r} | {config!s} | {config.master_key!r} | {config.master_key}")
    try:
        async with open_storage(config) as provider:
            await provider.get_kv_store(dict, "storage_agent_namespace")
    except fame.FameError as exc:
        _write(log, "wrong key", f"{exc!s} | {exc!r}\n{traceback.format_exc()}")
    for bad in (secrets.token_urlsafe(16), "not a key at all"):
        try:
            storage_config_from_env({**env, "FAME_STORAGE_MASTER_KEY": bad})
        except fame.FameError as exc:
            _write(log, "bad key", f"{exc!s} | {exc!r}\n{traceback.format_exc()}")


def run_leak_scenario(root: Path, registry: Any) -> None:
    """Drive the error paths that could leak a secret; everything lands under ``root``."""
    services = FameServices(root, STORAGE_AGENT, registry=registry, fame_init=True)
    run = root / "run"
    handler = logging.FileHandler(run / "in-process.log")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    fame_log = logging.getLogger("fame")
    level = fame_log.level
    fame_log.addHandler(handler)
    fame_log.setLevel(logging.DEBUG)
    try:
        with open(run / "scenario.log", "w", encoding="utf-8") as log:
            services.up()
            try:
                trio.run(_exercise, services, log)  # a scenario of its own, in its own loop
                trio.run(_fabric_in_process, root, registry, log)
                wrong_token = root / "conf" / "wrong-token.env"
                wrong_token.write_text(secrets.token_urlsafe(32) + "\n")
                for args in (["list"], ["--token-file", str(wrong_token)], ["get", "nope"]):
                    done = run_cli(root, "fame._cli.client", "--url", services.url, *args)
                    _write(log, f"fame-client {args[0]}", done.stdout + done.stderr)
            finally:
                services.close()
            wrong = secrets.token_urlsafe(32)
            registry.add("master_key", wrong)
            (root / "conf" / "wrong.env").write_text(f"FAME_STORAGE_MASTER_KEY={wrong}\n")
            right = ["--config", "conf/agent.env", "--config", "conf/secrets.env"]
            bad = ["--config", "conf/agent.env", "--config", "conf/wrong.env"]
            outcomes = {
                "check": run_fame(root, "check", "data/agent", *right),
                "check wrong key": run_fame(root, "check", "data/agent", *bad),
                "dump wrong key": run_fame(
                    root, "dump", "data/agent", "storage_agent_namespace", *bad
                ),
                "inspect wrong key": run_fame(root, "inspect", "data/agent", *bad),
                "node wrong key": run_fame(root, "node", *bad, "--agent", STORAGE_AGENT),
            }
            assert outcomes["check"].returncode == 0, outcomes["check"].stderr
            for name, done in outcomes.items():
                if name != "check":
                    assert done.returncode != 0, (name, done.stdout)
                    assert "master key" in done.stderr, (name, done.stderr)
            weak = secrets.token_urlsafe(16)  # too short: refused, and never echoed
            registry.add("master_key", weak)
            for setting in (f"FAME_STORAGE_MASTER_KEY={weak}", "FAME_STORAGE_PROFILE=bogus"):
                (root / "conf" / "bad.env").write_text(setting + "\n")
                done = run_fame(
                    root, "sentinel", "--config", "conf/sentinel.env",
                    "--config", "conf/secrets.env", "--config", "conf/bad.env",
                )  # fmt: skip
                assert done.returncode == 1, done.stdout
            trio.run(_wrong_key_in_process, root / "data" / "agent", wrong, log)
    finally:
        fame_log.removeHandler(handler)
        fame_log.setLevel(level)
        handler.close()


# --- the check ---------------------------------------------------------------------


def test_no_secret_in_the_logs_of_the_error_paths(
    tmp_path: Path, suite_secrets: Any, reliability_report: Any
) -> None:
    """The scenario's own files and logs hold no secret (the whole run's: ``tests/conftest.py``)."""
    run_leak_scenario(tmp_path, suite_secrets)
    result = scan(tmp_path, suite_secrets)
    counts = result.counts
    assert counts["master_keys"] >= 1 and counts["tokens"] >= 1, counts
    assert counts.get("derived_keys", 0) >= 1, counts
    assert result.log_files >= MIN_LOG_FILES and result.scanned_bytes >= MIN_BYTES, result
    assert not result.leaks, "secrets found:\n" + "\n".join(result.leaks[:50])
    reliability_report(**result.figures())
