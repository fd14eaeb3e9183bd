"""``fame sentinel`` and ``fame node``: run one node in the foreground.

The process opens its storage from the config (a wrong master key or a
damaged file is refused here, before anything listens or attaches), starts
the node, serves or attaches, writes its ready file, and runs until SIGTERM
or SIGINT. Then it leaves its blocks normally: agents finish what they
were handling, every storage actor commits and closes its file (the WAL is
checkpointed), and the process exits 0. A startup failure is one line on
stderr and exit status 1.

Stopping is bounded whatever the load: agents get :data:`SHUTDOWN_GRACE`
seconds to finish; then whatever still runs in the node (calls, thousands
of streams nobody reads, requests still arriving) is cancelled. The
storage is opened outside the node, so its actors still commit and close
their files after that.
"""

from __future__ import annotations

import contextvars
import logging
import pkgutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import fame
from fame import lowlevel
from fame.security import format_public_key
from fame.storage import StorageConfig, StorageProvider, open_storage, storage_config_from_env

from ._errors import describe, errors, one_line, shown_path
from ._gate import GateClosed, await_file, pass_gate
from ._live_admin import node_admin_address
from ._logs import configure_logging, say
from ._metrics import MetricsPortError, metrics_server
from ._processes import NOT_SERVING
from ._settings import (
    PENDING_KEY,
    SettingError,
    admission,
    agent_entries,
    client_tls,
    delivery_config,
    forget_master_key,
    metrics_endpoint,
    sentinel_door_limits,
    sentinel_host,
    sentinel_limits,
    sentinel_link_limits,
    sentinel_port,
    sentinel_quotas,
    sentinel_tls,
    sentinel_url,
    stream_idle_timeout,
)
from ._tracing import configure_tracing
from ._trust import (
    add_sentinel_keys,
    authorization_policy,
    client_credentials,
    client_token,
    sentinel_keys,
    sentinel_keys_file,
    trust_on_first_use,
)

if TYPE_CHECKING:
    from fame.lowlevel import Metrics

__all__ = ["AgentSpec", "hold", "parse_agent_spec", "run_node", "run_sentinel", "storage_config"]


log = logging.getLogger("fame.cli")

SHUTDOWN_GRACE = 2.0
"""Seconds a stopping node or sentinel lets its agents finish what they handle."""

_stopping: contextvars.ContextVar[trio.CancelScope] = contextvars.ContextVar("_stopping")
"""The scope of the running node or sentinel (see :func:`_guarded`), to bound its stop."""


class StartupError(Exception):
    """A problem found before the node runs, phrased for the user."""


class AgentSpec:
    """``module:Class@address``: which agent class to spawn, and where."""

    def __init__(self, target: str, address: str) -> None:
        self.target = target
        self.address = address

    def load(self) -> type[fame.BaseAgent]:
        try:
            obj = pkgutil.resolve_name(self.target)
        except (ImportError, AttributeError, ValueError) as exc:
            raise StartupError(f"cannot load agent {self.target}: {exc}") from None
        if not (isinstance(obj, type) and issubclass(obj, fame.BaseAgent)):
            raise StartupError(f"{self.target} is not a fame.BaseAgent subclass")
        return obj


def parse_agent_spec(text: str) -> AgentSpec:
    """Parse ``module:Class@name@path`` (the address is everything after the first ``@``)."""
    target, sep, address = text.strip().partition("@")
    if not sep or ":" not in target or not address:
        raise StartupError(
            f"bad agent {text!r}: expected module:Class@address, for example"
            " agents.storage_agent:StorageAgent@storage@fame.fabric"
        )
    try:
        fame.lowlevel.Address.parse(address)
    except fame.errors.AddressError as exc:
        raise StartupError(f"bad agent address {address!r}: {exc}") from None
    return AgentSpec(target, address)


def storage_config(settings: MutableMapping[str, str]) -> StorageConfig:
    """Parse the storage settings once, then drop the master key's text.

    From here on the process holds the key as bytes in ``config.master_key``
    only: not in ``settings``, ``config.env`` or ``os.environ``.
    """
    config = storage_config_from_env(settings)
    forget_master_key(settings)
    return config


def refuse_pending_rekey(settings: Mapping[str, str]) -> None:
    """Refuse to start while ``fame rekey`` has not finished: some files have the new key."""
    if settings.get(PENDING_KEY, "").strip():
        from ._rekey import pending_hint

        raise StartupError(pending_hint())


def _describe_storage(config: StorageConfig) -> str:
    if config.directory is None:
        return config.profile
    return f"{config.profile} in {shown_path(config.directory)}"


class _Ready:
    """The ready file ``fame up`` waits for: written once serving, removed on exit."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.line: str | None = None
        """The ready line while the service serves: what ``/healthz`` reports."""

    def set(self, text: str) -> None:
        self.line = text
        if self.path is not None:
            self.path.write_text(text + "\n", encoding="utf-8")

    def clear(self) -> None:
        self.line = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def _until_signal(
    signals: AsyncIterator[int], name: str, on_hangup: Callable[[], None] | None = None
) -> None:
    async for signum in signals:
        if signum == signal.SIGHUP and on_hangup is not None:
            on_hangup()
            continue
        say(name, f"{signal.Signals(signum).name} received, stopping")
        _stopping.get().deadline = trio.current_time() + SHUTDOWN_GRACE
        return


Reload = Callable[[], MutableMapping[str, str]]


async def _sentinel_main(settings: MutableMapping[str, str], ready: _Ready, reload: Reload) -> None:
    refuse_pending_rekey(settings)
    # Every setting is checked before the storage opens, so a typo costs nothing.
    sentinel_port(settings)
    admission(settings)
    stream_idle_timeout(settings)
    delivery_config(settings)
    sentinel_limits(settings)
    sentinel_door_limits(settings)
    sentinel_link_limits(settings)
    sentinel_quotas(settings)
    sentinel_tls(settings)
    client_credentials(settings)
    trust_on_first_use(settings)
    authorization_policy(settings)
    endpoint = metrics_endpoint(settings, "sentinel")
    config = storage_config(settings)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with (
            metrics_server(endpoint, "sentinel", lambda: ready.line) as metrics,
            open_storage(config, metrics=metrics) as provider,
        ):
            failure = await _guarded(
                _serve, provider, signals, settings, config, ready, reload, metrics
            )
    if failure is not None:
        raise failure
    say("sentinel", "stopped, storage closed")


async def _serve(
    provider: StorageProvider,
    signals: AsyncIterator[int],
    settings: Mapping[str, str],
    config: StorageConfig,
    ready: _Ready,
    reload: Reload,
    metrics: Metrics,
) -> None:
    host = sentinel_host(settings)
    port = sentinel_port(settings)
    _, open_admission = admission(settings)
    credentials = client_credentials(settings)
    max_connections, handshake_timeout = sentinel_limits(settings)
    door_limits = sentinel_door_limits(settings)
    tls = sentinel_tls(settings)
    certfile, keyfile, client_cafile = tls if tls is not None else (None, None, None)
    async with (
        fame.open_node(
            path="sentinel",
            storage_provider=provider,
            stream_idle_timeout=stream_idle_timeout(settings),
            delivery=delivery_config(settings),
            metrics=metrics,
        ) as node,
        fame.open_sentinel(
            node=node,
            host=host,
            port=port,
            credentials=credentials,
            open_admission=open_admission,
            trust_on_first_use=trust_on_first_use(settings),
            policy=authorization_policy(settings),
            admin=any(c.name == "admin" for c in credentials),
            max_connections=max_connections,
            handshake_timeout=handshake_timeout,
            door_limits=door_limits,
            limits=sentinel_link_limits(settings),
            quotas=sentinel_quotas(settings),
            certfile=certfile,
            keyfile=keyfile,
            client_cafile=client_cafile,
            metrics=metrics,
        ) as sentinel,
    ):
        # Its keys in the keys file before it says it is ready: the nodes
        # `fame up` starts next find them there.
        keys_file = sentinel_keys_file(settings)
        if keys_file.parent.is_dir():
            for key in add_sentinel_keys(keys_file, sentinel.public_keys):
                say("sentinel", f"added its key {format_public_key(key)} to {keys_file}")

        def on_hangup() -> None:
            # Credentials and policy from the files again: a rotation takes
            # effect without a restart. A bad file keeps what runs.
            try:
                fresh = reload()
                sentinel.reconfigure(
                    credentials=client_credentials(fresh), policy=authorization_policy(fresh)
                )
            except (SettingError, fame.errors.SentinelConfigError) as exc:
                say("sentinel", f"SIGHUP: kept the running settings: {exc}")
                return
            say("sentinel", "SIGHUP: reloaded the credentials and the policy")

        scheme = "ws" if tls is None else "wss"
        mutual = ", mutual TLS" if client_cafile is not None else ""
        storage = _describe_storage(config)
        line = f"listening on {scheme}://{host}:{port} (storage: {storage}{mutual})"
        say("sentinel", line)
        ready.set(line)
        await _until_signal(signals, "sentinel", on_hangup)
        ready.line = None  # stopping: /healthz says 503 from now on


async def _guarded(fn: Callable[..., Awaitable[None]], *args: object) -> Exception | None:
    """Run ``fn`` and return its error instead of raising it.

    The error is re-raised by the caller once the storage block has exited,
    so it reaches the user whatever the storage provider does on unwinding.
    Once a signal asked it to stop, ``fn`` gets :data:`SHUTDOWN_GRACE`
    seconds to leave its blocks; then what still runs in it is cancelled.
    """
    try:
        with trio.CancelScope() as stopping:
            _stopping.set(stopping)
            await fn(*args)
    except Exception as exc:
        return exc
    return None


async def _node_main(
    settings: MutableMapping[str, str],
    agents: Sequence[AgentSpec],
    ready: _Ready,
    after: Path | None = None,
) -> None:
    refuse_pending_rekey(settings)
    url = sentinel_url(settings)
    token = client_token(settings)
    classes = [(spec.load(), spec.address) for spec in agents]
    stream_idle_timeout(settings)
    delivery_config(settings)
    tls = client_tls(settings)
    # Started with the sentinel (`after`), the node reads its keys once it is ready.
    trusted = sentinel_keys(settings) if after is None else []
    endpoint = metrics_endpoint(settings, "node")
    config = storage_config(settings)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with (
            metrics_server(endpoint, "node", lambda: ready.line) as metrics,
            open_storage(config, metrics=metrics) as provider,
        ):
            failure = await _guarded(
                _attach,
                provider,
                signals,
                classes,
                url,
                (token, trusted),
                tls,
                settings,
                config,
                ready,
                metrics,
                after,
            )
    if failure is not None:
        raise failure
    say("node", "stopped, storage closed")


async def _attach(
    provider: StorageProvider,
    signals: AsyncIterator[int],
    classes: Sequence[tuple[type[fame.BaseAgent], str]],
    url: str,
    credentials: tuple[str | None, list[bytes]],
    tls: ssl.SSLContext | None,
    settings: Mapping[str, str],
    config: StorageConfig,
    ready: _Ready,
    metrics: Metrics,
    after: Path | None = None,
) -> None:
    token, trusted = credentials
    if after is not None:
        # Started together with the sentinel (see _gate): its storage is open
        # already; the sentinel's keys are in the keys file once it is ready.
        say("node", f"waiting for the sentinel to be ready ({shown_path(after)})")
        try:
            if not await await_file(after, signals):
                return
        except TimeoutError as exc:
            raise StartupError(f"the sentinel did not get ready: {exc}") from None
        try:
            trusted = sentinel_keys(settings)
        except SettingError as exc:
            raise StartupError(str(exc)) from None
    async with (
        fame.open_node(
            storage_provider=provider,
            stream_idle_timeout=stream_idle_timeout(settings),
            delivery=delivery_config(settings),
            metrics=metrics,
        ) as node,
        fame.attach(node, url, token=token, ssl_context=tls, sentinel_keys=trusted) as uplink,
    ):
        for cls, address in classes:
            await node.spawn(cls, address)
        # Its live storage administration (fame backup), for the admin only;
        # a policy that does not let it bind leaves the node serving as before.
        await node.spawn(lambda: lowlevel.NodeAdmin(provider), node_admin_address(settings))
        # Ready means reachable: the sentinel confirmed every agent's address.
        await uplink.wait_bound()
        refused = {
            a: why
            for a, why in uplink.bindings.refused.items()
            if a in {address for _, address in classes}
        }
        if refused:
            taken = [a for a, why in refused.items() if "already bound" in why]
            hint = (
                f": if this node replaces the one that held {taken[0]}, free the address with:"
                f" fame admin release {taken[0]}"
                if taken
                else ""
            )
            raise StartupError(
                "the sentinel refused to route "
                + "; ".join(f"{address} ({why})" for address, why in sorted(refused.items()))
                + hint
            )
        names = ", ".join(address for _, address in classes) or "no agents"
        line = f"serving {names} via {url} (storage: {_describe_storage(config)})"
        say("node", line)
        ready.set(line)
        async with trio.open_nursery() as watching:
            ours = {address for _, address in classes}
            watching.start_soon(_keep_ready_true, uplink, ours, ready, line)
            await _until_signal(signals, "node")
            ready.line = None  # stopping: /healthz says 503 from now on
            watching.cancel_scope.cancel()


async def _keep_ready_true(uplink: Any, ours: set[str], ready: _Ready, line: str) -> None:
    """Rewrite the ready file whenever the sentinel refuses (or grants again) an agent's address.

    After a re-attach the sentinel may refuse an address the node served
    (another node took it meanwhile): ``fame status`` must not say
    "serving" then, so the file says what is refused and why.
    """
    shown = line
    while True:
        await uplink.wait_bindings_moved()
        refused = {a: why for a, why in uplink.bindings.refused.items() if a in ours}
        reasons = (f"{a}: the sentinel refused it ({why})" for a, why in sorted(refused.items()))
        text = f"{NOT_SERVING} " + "; ".join(reasons) if refused else line
        if text != shown:
            ready.set(text)
            say("node", text)
            shown = text


def _run(name: str, main: object, *args: object) -> int:
    try:
        trio.run(main, *args)  # type: ignore[arg-type]
    except StartupError as exc:
        print(f"fame {name}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        for error in errors(exc):
            if isinstance(error, (StartupError, MetricsPortError)):
                text = str(error)
            else:
                text = one_line(error)
                if describe(error) is None:
                    # Not one fame phrases: a bug, whose traceback is the way to fix it.
                    # Logged once, here; a crash the supervisor saw is a FameError by now.
                    log.error("fame %s stopped by an unexpected error", name, exc_info=error)
            print(f"fame {name}: {text}", file=sys.stderr, flush=True)
        return 1
    return 0


def hold(name: str) -> bool:
    """Import what the service ``name`` runs, then wait at ``fame up``'s gate (see _gate).

    False if the gate was closed. The public modules import their names on
    first use (:mod:`fame._lazy`): looked up here, the sentinel's server or
    the node's uplink load while ``fame up`` enrolls, not after the gate.
    The caller reads the settings once through the gate: ``fame up`` may
    have written ``conf/secrets.env`` meanwhile.
    """
    fame.open_node  # noqa: B018 (looked up to be imported)
    if name == "sentinel":
        fame.open_sentinel  # noqa: B018
    else:  # and the sentinel's default address, for its URL (fame.lowlevel.DEFAULT_PORT)
        fame.attach, lowlevel.NodeAdmin, lowlevel.DEFAULT_PORT  # noqa: B018
    return _gated(name, True)


def _gated(name: str, gate: bool) -> bool:
    """Wait at ``fame up``'s gate if ``gate`` (see _gate); False if it was closed."""
    if not gate:
        return True
    try:
        pass_gate()
    except GateClosed:
        print(f"fame {name}: fame up did not let it start: not started", file=sys.stderr)
        return False
    return True


def run_sentinel(
    settings: MutableMapping[str, str],
    ready_file: Path | None,
    reload: Reload | None = None,
    gate: bool = False,
) -> int:
    """Run the sentinel until SIGTERM or SIGINT; return the exit status.

    On SIGHUP it takes the client credentials and the policy from
    ``reload()`` (the settings read again), without stopping. ``gate``:
    first wait until ``fame up`` says go on stdin (see :mod:`._gate`).
    """
    ready = _Ready(ready_file)
    ready.clear()
    if not _gated("sentinel", gate):
        return 1
    try:
        configure_logging(settings)
        configure_tracing(settings)
    except SettingError as exc:
        print(f"fame sentinel: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        return _run("sentinel", _sentinel_main, settings, ready, reload or (lambda: settings))
    finally:
        ready.clear()


def run_node(
    settings: MutableMapping[str, str],
    agents: Sequence[str],
    ready_file: Path | None,
    gate: bool = False,
    after: Path | None = None,
) -> int:
    """Run a node hosting ``agents`` (``module:Class@address``) until a signal.

    ``gate``: first wait until ``fame up`` says go on stdin; ``after``: attach
    once that file (the sentinel's ready file) exists (see :mod:`._gate`).
    """
    ready = _Ready(ready_file)
    ready.clear()
    if not _gated("node", gate):
        return 1
    try:
        texts = list(agents) or agent_entries(settings)
        specs = [parse_agent_spec(text) for text in texts]
        configure_logging(settings)
        configure_tracing(settings)
    except (StartupError, SettingError) as exc:
        print(f"fame node: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        return _run("node", _node_main, settings, specs, ready, after)
    finally:
        ready.clear()
