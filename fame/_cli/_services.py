"""``fame init|up|stop|status|logs|clean``: the local sentinel and storage agent.

These are what ``just init``, ``just up`` and friends run in a checkout.
They work in the project directory (``--project DIR``, ``FAME_PROJECT_DIR``
or the current directory; see :mod:`fame._cli._project`), which ``fame init``
makes out of an empty one. Services are plain background processes
(``fame sentinel`` and ``fame node``) started there, each with a pid file, a
ready file and a log under ``run/``:

=====================  =================================================
``run/<name>.pid``     the process id, written when it is started
``run/<name>.ready``   written by the process once it serves, removed on exit
``run/<name>.log``     its stdout and stderr, appended
=====================  =================================================

A pid file is trusted only if that process is still alive and its command
line is the one started here, so a stale file never makes ``stop`` signal a
stranger. ``up`` is idempotent: running services are left alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

import fame
from fame.errors import PermissionDenied
from fame.storage import MasterKey

from . import _admin, _status
from ._discover import forget_url, record_url, running_url
from ._errors import errors
from ._gate import GO
from ._launch import Launch, launch
from ._logs import configure_logging
from ._processes import NOT_SERVING, SERVICES, Service, alive
from ._project import STARTER_MODULE, project_files
from ._runner import StartupError, parse_agent_spec
from ._settings import (
    AGENT_CONF,
    CONF_DIR,
    SECRETS_FILE,
    SENTINEL_CONF,
    SettingError,
    client_tls,
    load_settings,
    read_env_file,
    sentinel_url,
)
from ._stored_data import encrypted_data, lost_key_message
from ._trust import client_token, sentinel_keys

__all__ = ["SERVICES", "clean", "init", "logs", "status", "stop", "up"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_READY_POLL = 0.01
"""Seconds between looks at a ready file: a stat each, and at most that much added to up."""


def _say(text: str) -> None:
    print(text, flush=True)


def _fail(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- init and clean ------------------------------------------------------------


def init() -> int:
    """Make the project directory a project: write what is missing of it.

    ``conf/sentinel.env`` and ``conf/agent.env`` (with the starter agent
    ``storage_agent.py`` if ``conf/agent.env`` is new), then
    ``conf/secrets.env`` (master key, admission token, mode 0600). Existing
    files are kept as they are; a missing ``conf/secrets.env`` is not made
    anew while encrypted data is there (nothing is written then, see
    :func:`_refuse_new_key`). Then the project's agent is enrolled at its
    sentinel, once, when its identity persists (``fame enroll``).
    """
    if _refuse_new_key("init"):
        return 1
    new_agent_conf = not AGENT_CONF.exists()
    for path, text in project_files().items():
        if path.exists() or (path == STARTER_MODULE and not new_agent_conf):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        _say(f"fame init: wrote {path}")
    if _init_secrets("init") != 0:
        return 1
    if _admin.run("init", _admin.publish_sentinel_keys):
        return 1
    return _admin.run("init", _admin.enroll_agent_on_init)


def _enroll_agent_quietly() -> int:
    """Enroll the agent before the sentinel starts (a project older than enrollment).

    The storage's notes about the master key (an older format) are the
    services' to log when they start: said here too, they would be said twice.
    """
    storage_log = logging.getLogger("fame.storage")
    level = storage_log.level
    storage_log.setLevel(logging.ERROR)
    try:
        if _admin.run("up", lambda: _admin.publish_sentinel_keys("up")):
            return 1
        return _admin.run("up", lambda: _admin.enroll_agent_on_init("up"))
    finally:
        storage_log.setLevel(level)


def _add_missing_policy() -> None:
    """Write the example's authorization policy into a project made before policies existed."""
    policy = Path("conf/policy.toml")
    if not policy.exists():
        policy.write_text(project_files()[policy], encoding="utf-8")
        _say(
            f"fame up: wrote {policy}: node:agent may bind storage@fame.fabric, clients may"
            " call its operations; nothing else is allowed (edit it for your own agents)"
        )


def _add_admin_credential(command: str) -> None:
    """Give a project from before live administration its admin credential."""
    if not read_env_file(SECRETS_FILE).get("FAME_ADMIN_TOKEN"):
        with SECRETS_FILE.open("a", encoding="utf-8") as f:
            f.write(f"FAME_ADMIN_TOKEN={secrets.token_urlsafe(32)}\n")
        _say(f"fame {command}: added an admin credential (FAME_ADMIN_TOKEN) to {SECRETS_FILE}")


def _add_admission_token(command: str) -> bool:
    """Give ``conf/secrets.env`` an admission token when it holds none (a key put back alone).

    After a lost ``conf/secrets.env`` the master key may be all that could be
    restored; the token is not tied to any data, so a new one is made, as for
    a new project. Not when the sentinel takes its token from elsewhere
    (``FAME_ADMISSION_TOKEN_FILE``, the environment) or admits anyone.
    """
    settings = load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True)
    if any(
        settings.get(name, "").strip()
        for name in ("FAME_ADMISSION_TOKEN", "FAME_ADMISSION_TOKEN_FILE", "FAME_OPEN_ADMISSION")
    ):
        return False
    with SECRETS_FILE.open("a", encoding="utf-8") as f:
        f.write(f"FAME_ADMISSION_TOKEN={secrets.token_urlsafe(32)}\n")
    _say(
        f"fame {command}: added a new admission token (FAME_ADMISSION_TOKEN) to {SECRETS_FILE}:"
        " clients read it from there"
    )
    return True


def _refuse_new_key(command: str) -> bool:
    """Say so and return True if a new master key would orphan encrypted data.

    Without ``conf/secrets.env``, ``init`` and ``up`` would write a new
    master key; where encrypted files exist, that key cannot open them, and
    the way out must be the old key, not a new start that throws them away.
    """
    if SECRETS_FILE.exists():
        return False
    found = encrypted_data()
    if not found:
        return False
    _fail(lost_key_message(command, found))
    return True


def _lacks_master_key(command: str) -> bool:
    """Say so and return True if ``conf/secrets.env`` (nor the environment) has no master key.

    The file is left as it is: where data exists, only its own key helps.
    """
    if load_settings([SECRETS_FILE]).get("FAME_STORAGE_MASTER_KEY", "").strip():
        return False
    found = encrypted_data()
    remedy = (
        f" with the key {', '.join(str(d.directory) for d in found)} was created with,"
        " from your backup"
        if found
        else " (fame keygen makes one), or remove the file: no data depends on it"
    )
    _fail(
        f"fame {command}: {SECRETS_FILE} exists but lacks FAME_STORAGE_MASTER_KEY; it was"
        f" left unchanged (add the line FAME_STORAGE_MASTER_KEY=...{remedy})"
    )
    return True


def _init_secrets(command: str) -> int:
    if SECRETS_FILE.exists():
        if _lacks_master_key(command):
            return 1
        kept = "master key" if _add_admission_token(command) else "master key and admission token"
        _say(f"fame {command}: {SECRETS_FILE} exists: keeping its {kept}")
        _add_admin_credential(command)
        return 0
    if _refuse_new_key(command):
        return 1
    CONF_DIR.mkdir(exist_ok=True)
    text = (
        "# Written by `fame init`. Keep it secret; do not commit it.\n"
        "# The master key encrypts data/; losing or changing it makes the data unreadable.\n"
        f"FAME_STORAGE_MASTER_KEY={MasterKey.generate().export()}\n"
        f"FAME_ADMISSION_TOKEN={secrets.token_urlsafe(32)}\n"
        "# Live administration of the running sentinel (`fame admin`); clients never need it.\n"
        f"FAME_ADMIN_TOKEN={secrets.token_urlsafe(32)}\n"
    )
    fd = os.open(SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(SECRETS_FILE, 0o600)
    _say(
        f"fame {command}: wrote {SECRETS_FILE} (mode 0600): a new master key, admission token and"
        " admin credential"
    )
    return 0


def clean(yes: bool = False) -> int:
    """Stop the services, then remove the secrets, ``data/`` and ``run/``, once confirmed.

    See :mod:`fame._cli._clean`: it lists what goes and asks first.
    """
    from ._clean import clean as clean_project

    return clean_project(yes, stop, _say)


# -- up ------------------------------------------------------------------------


def _reason(service: Service) -> str:
    """The last line the failed service logged (its one-line error)."""
    try:
        lines = [
            ln for ln in service.log_file.read_text(errors="replace").splitlines() if ln.strip()
        ]
    except FileNotFoundError:
        lines = []
    if not lines:
        return f"it exited without a message (see {service.log_file})"
    prefix = f"fame {service.args[0]}: "
    last = lines[-1]
    return last[len(prefix) :] if last.startswith(prefix) else f"{last} (see {service.log_file})"


def _open_gate(service: Service, process: subprocess.Popen[bytes]) -> None:
    """Let a started service open its storage; its pid file first, so ``fame stop`` finds it."""
    service.pid_file.write_text(f"{process.pid}\n")
    assert process.stdin is not None
    try:
        process.stdin.write(GO)
        process.stdin.close()
    except BrokenPipeError:
        pass  # it died already: waiting for it says why


def _close_gates(processes: dict[Service, subprocess.Popen[bytes]], made: list[Path]) -> None:
    """Send the held services away: they exit without opening anything (no pid file yet).

    ``made`` are the paths this ``up`` created for them (``run/``, new logs):
    removed, so that a refused ``up`` leaves the project as it found it.
    """
    for process in processes.values():
        assert process.stdin is not None
        process.stdin.close()
    for process in processes.values():
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for path in reversed(made):  # the logs, then run/ if nothing else is in it
        if not path.is_dir():
            path.unlink(missing_ok=True)
        elif not any(path.iterdir()):
            path.rmdir()


def _wait_ready(service: Service, process: subprocess.Popen[bytes], deadline: float) -> str | None:
    """Wait for the ready file; return the failure reason, or None when ready."""
    while True:
        if process.poll() is not None:
            service.pid_file.unlink(missing_ok=True)
            return _reason(service)
        if service.ready_file.exists():
            return None
        if time.monotonic() > deadline:
            return f"not ready after {START_TIMEOUT:.0f} s (see {service.log_file})"
        time.sleep(_READY_POLL)


PROBE_OPERATION = "fame-up-probe"
"""An operation no agent has (not a Python name): an agent answers it with UnknownOperation."""


@attrs.frozen
class _ProbeClient:
    """How ``fame up``'s probe reaches the sentinel: the settings a client reads, read once."""

    url: str
    token: str | None
    tls: ssl.SSLContext | None
    keys: list[bytes]


async def _probe_agents(client: _ProbeClient, addresses: list[str]) -> None:
    """Return once every agent answered; an agent answers the probe with UnknownOperation."""
    async with fame.connect(
        client.url, token=client.token, ssl_context=client.tls, sentinel_keys=client.keys
    ) as node:
        for address in addresses:
            try:
                await getattr(node.proxy(address).with_timeout(5), PROBE_OPERATION)()
            except PermissionDenied:
                # The policy keeps clients from this agent (or from the probe):
                # its node said it is bound, and that is all a client can check.
                continue
            except fame.UnknownOperation:
                continue


def _wait_answers(
    client: _ProbeClient,
    addresses: list[str],
    alive: Callable[[], bool],
    deadline: float,
) -> str | None:
    """Call the agents until they answer; return the last error if they never do."""
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            return None  # the caller reports the dead process
        try:
            trio.run(_probe_agents, client, addresses)
            return None
        except Exception as exc:
            last = "; ".join(f"{type(error).__name__}: {error}" for error in errors(exc))
        time.sleep(0.1)
    names = ", ".join(addresses)
    return f"{names} did not answer within {START_TIMEOUT:.0f} s: {last}"


def _agent_addresses() -> list[str]:
    """The addresses of the agents ``conf/agent.env`` names (``FAME_AGENTS``)."""
    settings = load_settings([AGENT_CONF, SECRETS_FILE], optional=True)
    texts = settings.get("FAME_AGENTS", "").replace(",", " ").split()
    return [parse_agent_spec(text).address for text in texts]


def _port_conflict(wanted: str) -> str | None:
    """Why ``up`` cannot serve at ``wanted``: the sentinel already runs elsewhere; else None."""
    pid = SERVICES[0].pid()
    running = running_url()
    if pid is None or running is None or running == wanted:
        return None
    return (
        f"the sentinel already runs at {running} (pid {pid}), not at {wanted}: stop it first"
        " with: fame stop (just stop), then start it again"
    )


def _checks() -> tuple[list[str], ssl.SSLContext | None, str] | None:
    """Make the project ready to start, or say why not (None).

    The secrets (written if missing), the agents' addresses, the probe's TLS,
    the sentinel's URL, and that no sentinel of this project runs elsewhere.
    """
    for service in SERVICES:
        if not service.config.exists():
            _fail(
                f"fame up: {service.config} is missing: {Path.cwd()} is not a fame project"
                " (make it one with: fame init, or pass --project DIR)"
            )
            return None
    if not SECRETS_FILE.exists():
        if _init_secrets("up") != 0:
            return None
    elif _lacks_master_key("up"):
        return None
    _add_admission_token("up")
    _add_admin_credential("up")
    _add_missing_policy()
    try:
        addresses = _agent_addresses()
    except StartupError as exc:
        _fail(f"fame up: {AGENT_CONF}: {exc}")
        return None
    try:  # how the probe checks the sentinel (wss://): the settings a client reads
        tls = client_tls(load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True))
    except SettingError as exc:
        _fail(f"fame up: {SENTINEL_CONF}: {exc}")
        return None
    try:
        wanted = sentinel_url(load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True))
    except SettingError as exc:
        _fail(f"fame up: {SENTINEL_CONF}: {exc}")
        return None
    conflict = _port_conflict(wanted)
    if conflict is not None:
        _fail(f"fame up: {conflict}")
        return None
    return addresses, tls, wanted


def up(launched: Launch | None = None) -> int:
    """Start whatever is not running, wait until the storage agent answers.

    ``launched``: what :func:`._launch.launch` started already, held at the
    gates (``fame up`` does that first, see :mod:`._launch`); started here
    otherwise. Both services import while this process checks the project
    and enrolls the agent; each opens its storage once let through its
    gate, the node attaches once the sentinel is ready (see _gate).
    """
    if launched is None:
        launched = launch()
    processes, made = launched.processes, launched.made
    enroll = SERVICES[0] not in launched.running
    try:
        configure_logging(os.environ)  # FAME_LOG_*: fame's main leaves it to up, for speed
        checked = _checks()
        for service, pid in launched.running.items() if checked is not None else ():
            _say(f"fame up: {service.name} already running (pid {pid})")
        refused = checked is None or (enroll and _enroll_agent_quietly())
    except BaseException:  # a refusal phrased by the caller (a wrong master key, ...)
        _close_gates(processes, made)
        raise
    if refused or checked is None:
        _close_gates(processes, made)
        return 1
    addresses, tls, wanted = checked
    for service, process in processes.items():
        _open_gate(service, process)
    started: list[Service] = []
    deadline = time.monotonic() + START_TIMEOUT
    for service, process in processes.items():
        reason = _wait_ready(service, process, deadline)
        if reason is not None:
            _fail(f"fame up: the {service.name} failed to start: {reason}")
            for other in reversed(processes):
                if other is not service:
                    _stop_one(other)
            return 1
        started.append(service)
        if service is SERVICES[0]:
            record_url(wanted)  # how clients in other shells find it (fame-client)
        _say(f"fame up: {service.name} started (pid {process.pid}), log in {service.log_file}")
    settings = load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True)
    url = sentinel_url(settings)
    agent = SERVICES[1]
    try:  # the keys file the sentinel wrote before it said it was ready
        client = _ProbeClient(url, client_token(settings), tls, sentinel_keys(settings))
    except SettingError as exc:
        problem: str | None = f"{SENTINEL_CONF}: {exc}"
    else:
        problem = _wait_answers(client, addresses, lambda: agent.pid() is not None, deadline)
    if agent.pid() is None:
        problem = _reason(agent)
    if problem is not None:
        _fail(f"fame up: {problem}")
        for other in reversed(started):
            _stop_one(other)
        return 1
    for address in addresses:
        _say(f"fame up: {address} answers via {url}")
    if not addresses:
        _say(f"fame up: the node serves no agents (FAME_AGENTS in {AGENT_CONF} is empty)")
    return 0


# -- stop, status, logs ----------------------------------------------------------


def _stop_one(service: Service) -> bool:
    """SIGTERM, wait, then SIGKILL; only the pid this service recorded. True if stopped."""
    pid = service.pid()
    if pid is None:
        service.pid_file.unlink(missing_ok=True)
        service.ready_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        _fail(f"fame stop: {service.name} (pid {pid}) did not stop in {STOP_TIMEOUT:.0f} s: killed")
        os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)
    service.pid_file.unlink(missing_ok=True)
    service.ready_file.unlink(missing_ok=True)
    if service is SERVICES[0]:
        forget_url()
    return True


def stop() -> int:
    """Stop the agent, then the sentinel, gracefully."""
    for service in reversed(SERVICES):
        pid = service.pid()
        if _stop_one(service):
            _say(f"fame stop: {service.name} stopped (pid {pid})")
        else:
            _say(f"fame stop: {service.name} is not running")
    return 0


def status(watch: bool = False, interval: float = 1.0) -> int:
    """Print each service's state, then the live sentinel's view (``fame._cli._status``).

    Exit 0 only if all run and every address in FAME_AGENTS is bound;
    ``watch``: the live view of the traffic, redrawn every ``interval`` s.
    """
    if watch:
        return _status.watch(interval)
    running = 0
    for service in SERVICES:
        pid = service.pid()
        if pid is None:
            _say(f"{service.name:<9} stopped")
            continue
        running += 1
        state = "ready" if service.ready_file.exists() else "starting"
        detail = service.ready_file.read_text().strip() if state == "ready" else ""
        if detail.startswith(NOT_SERVING):  # the node's agents lost an address (see _runner)
            state = "not serving"
        _say(f"{service.name:<9} running (pid {pid}, {state}) {detail}".rstrip())
    if SERVICES[0].pid() is None:
        _say("live view unavailable: the sentinel is not running (start it with: fame up)")
        return 3
    try:
        expected = _agent_addresses()
    except StartupError:
        expected = []  # the agent's own start says what is wrong with FAME_AGENTS
    live = _status.report(expected, _say)
    return 0 if running == len(SERVICES) and live else 3


def logs(lines: int = 40) -> int:
    """Print the end of each service's log."""
    for service in SERVICES:
        _say(f"==> {service.log_file} <==")
        try:
            text = service.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            _say("(no log yet)")
            continue
        for line in text[-lines:]:
            _say(line)
    return 0
