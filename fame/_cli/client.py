"""``fame-client``: the storage example's client.

With no arguments it does what the seed's client does: store
``Hello, World!`` under ``key_<epoch-ms>``, read it back, stream every
stored pair and count them. ``store KEY VALUE``, ``get KEY`` and ``list`` do
one step each; ``--json`` prints machine-readable output and ``--verbose``
prints every envelope (``FAME_SHOW_ENVELOPES=1``). ``call ADDRESS OPERATION
NAME=VALUE...`` calls any agent's operation and prints the result as JSON.

It attaches to the sentinel as a small ephemeral node and calls
``storage@fame.fabric`` by operation name: it needs the agent's wire
contract (operation names, the record's fields), not its module, so it runs
wherever fame is installed. ``store KEY -`` reads the value from standard
input, ``store KEY --file PATH`` from a file. The sentinel's URL is
``--url``, else the environment's, else the running sentinel's (recorded by
``fame up`` in ``run/``), else ``conf/sentinel.env``'s (see
:mod:`fame._cli._discover`); the admission token comes from the project
directory's ``conf/`` (``--project DIR``, ``FAME_PROJECT_DIR``, else the
nearest project at or above the current directory) and the environment; the
token may also come from ``--token-file PATH`` (``-``: standard input), but
never from the command line, where ``ps`` would show it: ``--token VALUE``
is refused. Every failure (sentinel
unreachable, no agent, admission refused, no answer within ``--timeout``,
which bounds the whole command) is one line on stderr and exit status 1;
usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio

import fame
from fame.errors import ProtocolMismatch, UntrustedSentinel, WireError

from ._discover import find_project, find_sentinel
from ._errors import describe, errors
from ._hardening import disable_core_dumps
from ._logs import configure_logging
from ._project import PROJECT_ENV
from ._settings import (
    SECRETS_FILE,
    SENTINEL_CONF,
    SettingError,
    client_tls,
    load_settings,
    read_token_file,
)
from ._tracing import configure_tracing
from ._trust import client_token, sentinel_keys

__all__ = ["main", "record_json"]

PROG = "fame-client"
STORAGE_AGENT_ADDRESS = "storage@fame.fabric"
TOKEN_IN_ARGV = (
    "--token is refused: a token on the command line is visible to every user in ps;"
    " use --token-file PATH (- for standard input) or FAME_ADMISSION_TOKEN"
)


class _RefuseToken(argparse.Action):
    """``--token VALUE``: remembered as refused, the value itself is not kept."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        namespace.token_in_argv = True


class ClientError(Exception):
    """A failure already phrased for the user."""


class RecordModel(msgspec.Struct, frozen=True):
    """A record as the storage example's agent answers it: the value and when it was stored."""

    value: str
    created: datetime


def _record(data: Any) -> RecordModel | None:
    return None if data is None else msgspec.convert(data, RecordModel, strict=False)


def _pair(data: Any) -> tuple[str, RecordModel]:
    return msgspec.convert(data, tuple[str, RecordModel], strict=False)


def _seconds(text: str) -> float:
    """``--timeout``: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _argument(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``call``: the value as JSON if it parses, else as the text itself."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _iso(created: datetime) -> str:
    created = created.astimezone(UTC) if created.tzinfo else created.replace(tzinfo=UTC)
    return created.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_dict(record: RecordModel) -> dict[str, Any]:
    """A record as plain JSON data, ``created`` in ISO 8601 UTC with ``Z``."""
    return {"value": record.value, "created": _iso(record.created)}


def record_json(record: RecordModel | None) -> str:
    """A record as compact JSON, as the seed's client prints it."""
    if record is None:
        return "null"
    return json.dumps(record_dict(record), separators=(",", ":"), ensure_ascii=False)


def _pair_json(key: str, record: RecordModel) -> str:
    return json.dumps([key, record_dict(record)], separators=(",", ":"), ensure_ascii=False)


def _add_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The options, accepted before and after the command (``list --json``)."""

    def pick(value: object) -> object:
        return value if default is None else default

    parser.add_argument(
        "--url",
        default=pick(None),
        help="sentinel URL (default: from conf/sentinel.env, ws://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token-file",
        default=pick(None),
        metavar="PATH",
        help="read the admission token from PATH's first line, or from standard input"
        " for - (default: FAME_ADMISSION_TOKEN, or conf/secrets.env)",
    )
    # Refused, with a one-line reason: it used to take the token itself.
    parser.add_argument(
        "--token", action=_RefuseToken, dest="token_in_argv", default=pick(False),
        help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=pick(False),
        help="print every envelope sent and received",
    )
    parser.add_argument(
        "--json", action="store_true", default=pick(False), help="machine-readable output"
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=pick(10.0),
        help="seconds for the whole command, connecting included (default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--project",
        default=pick(None),
        metavar="DIR",
        help=f"the project whose conf/ to read (default: {PROJECT_ENV}, else the current one)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Call the storage agent (storage@fame.fabric) through the sentinel."
        " Without a command: store, retrieve and list, as the seed's client does.",
    )
    common = argparse.ArgumentParser(add_help=False)
    _add_options(common, argparse.SUPPRESS)
    _add_options(parser, None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    store = commands.add_parser(
        "store", parents=[common],
        help="store VALUE under KEY (- reads it from standard input, --file PATH from a file)",
    )  # fmt: skip
    store.add_argument("key")
    store.add_argument(
        "value", nargs="?", help="the text to store; - for standard input (stored as is)"
    )
    store.add_argument(
        "--file", dest="value_file", metavar="PATH", help="store the content of PATH (UTF-8 text)"
    )
    get = commands.add_parser("get", parents=[common], help="print the record under KEY")
    get.add_argument("key")
    commands.add_parser("list", parents=[common], help="print every stored key and record")
    call = commands.add_parser(
        "call", parents=[common], help="call any agent's operation; print the result as JSON"
    )
    call.add_argument("address", help="the agent's address, e.g. storage@fame.fabric")
    call.add_argument("operation")
    call.add_argument(
        "arguments", nargs="*", type=_argument, metavar="NAME=VALUE",
        help="keyword arguments; a VALUE that is JSON is passed as such, else as text",
    )  # fmt: skip
    call.add_argument(
        "--stream", action="store_true", help="a streaming operation: print one JSON line per item"
    )
    return parser


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _call(node: fame.Node, args: argparse.Namespace) -> None:
    proxy = node.proxy(args.address).with_timeout(args.timeout)
    call = getattr(proxy, args.operation)(**dict(args.arguments))
    if args.stream:
        async for item in call:
            print(_json(item))
    else:
        print(_json(await call))


@attrs.frozen
class _Target:
    """The sentinel to call and how; ``secrets``: where the token was looked for."""

    url: str
    token: str | None
    tls: ssl.SSLContext | None
    keys: list[bytes]
    secrets: Path


async def _run(args: argparse.Namespace, target: _Target) -> int:
    """Run the command within ``--timeout`` seconds in all, connecting included."""
    status = 0
    url = target.url
    attached = trio.Event()
    try:
        with trio.move_on_after(args.timeout) as deadline:
            status = await _work(args, target, sys.stdout, attached)
    except ClientError:
        raise
    except BaseException as exc:
        address = args.address if args.command == "call" else STORAGE_AGENT_ADDRESS
        lines = (_explain(error, target, address) for error in errors(exc))
        raise ClientError("\n".join(lines)) from None
    if deadline.cancelled_caught:
        # With TLS 1.3 the client's handshake ends before the sentinel checks the
        # client's certificate; one that requires a certificate then drops the
        # connection silently, so a timeout over wss:// may be that.
        tls = (
            "; over TLS, a sentinel that requires a client certificate drops a connection"
            " that presents none, or none it trusts (check FAME_TLS_CERT and FAME_TLS_KEY)"
            if url.startswith("wss://")
            else ""
        )
        what = (
            f"no answer from the sentinel at {url}"
            if attached.is_set()
            else f"cannot reach the sentinel at {url}: no answer"
        )
        raise ClientError(
            f"{what} within {args.timeout:g} s (--timeout): it is stopped, overloaded or not a"
            f" fame sentinel{tls} (check: fame status; or raise --timeout)"
        )
    return status


async def _work(args: argparse.Namespace, target: _Target, out: Any, attached: trio.Event) -> int:
    """Attach (then set ``attached``), do the command, return its exit status."""
    async with fame.connect(
        target.url,
        token=target.token,
        ssl_context=target.tls,
        sentinel_keys=target.keys,
        connect_timeout=args.timeout,
    ) as node:
        attached.set()
        agent = node.proxy(STORAGE_AGENT_ADDRESS).with_timeout(args.timeout)
        if args.command == "call":
            await _call(node, args)
        elif args.command is None:
            key = f"key_{time.time_ns() // 1_000_000}"
            stored = _record(await agent.store_value(key=key, value="Hello, World!"))
            assert stored is not None
            retrieved = _record(await agent.retrieve_value(key=key))
            pairs = [_pair(item) async for item in agent.retrieve_all_values()]
            if args.json:
                document = {
                    "key": key,
                    "stored": record_dict(stored),
                    "retrieved": None if retrieved is None else record_dict(retrieved),
                    "all": {k: record_dict(r) for k, r in pairs},
                    "total": len(pairs),
                }
                print(json.dumps(document, separators=(",", ":")), file=out)
                return 0
            print(f"Stored value: {record_json(stored)}\n", file=out)
            print(f"Retrieved value: {record_json(retrieved)}\n", file=out)
            print("All stored key-values:", file=out)
            for k, r in pairs:
                print(_pair_json(k, r), file=out)
            print(f"\nTotal stored values: {len(pairs)}", file=out)
        elif args.command == "store":
            stored = _record(await agent.store_value(key=args.key, value=args.value))
            text = record_json(stored)
            print(text if args.json else f"Stored value: {text}", file=out)
        elif args.command == "get":
            retrieved = _record(await agent.retrieve_value(key=args.key))
            if args.json:
                print(record_json(retrieved), file=out)
            elif retrieved is None:
                raise ClientError(f"no record under key {args.key!r}")
            else:
                print(f"Retrieved value: {record_json(retrieved)}", file=out)
            return 0 if retrieved is not None else 1
        else:
            count = 0
            async for item in agent.retrieve_all_values():
                k, r = _pair(item)
                count += 1
                if args.json:
                    line = json.dumps({"key": k, **record_dict(r)}, separators=(",", ":"))
                    print(line, file=out)
                else:
                    print(_pair_json(k, r), file=out)
            if not args.json:
                print(f"\nTotal stored values: {count}", file=out)
    return 0


def _explain(exc: BaseException, target: _Target, address: str) -> str:
    url = target.url
    hint = "is it running? start it with: fame up"
    if isinstance(exc, fame.NoRoute):
        return f"no agent at {address} behind {url}: {exc} ({hint})"
    if isinstance(exc, UntrustedSentinel):
        return (
            f"refusing the sentinel at {url}: {exc.reason}. Is {url} the right address? If the"
            " sentinel's key changed, copy its conf/sentinel.keys"
        )
    if isinstance(exc, ProtocolMismatch):
        return f"the sentinel at {url} cannot be used: {exc.reason} (upgrade the older side)"
    if isinstance(exc, fame.AdmissionRefused) and target.token is None:
        return (
            f"the sentinel at {url} wants an admission token and none was found: looked in"
            f" FAME_ADMISSION_TOKEN(_FILE) and {target.secrets} (run from the project directory,"
            " or pass --project DIR or --token-file PATH)"
        )
    if isinstance(exc, fame.AdmissionRefused):
        return (
            f"the sentinel at {url} refused admission: {exc} (check --token-file or"
            f" FAME_ADMISSION_TOKEN; fame init wrote it to {SECRETS_FILE})"
        )
    if isinstance(exc, fame.DeadlineExceeded):
        return f"no answer in time from {address} via {url}: {exc}"
    if isinstance(exc, fame.SentinelUnreachable):
        if "TLS" in str(exc):  # a certificate problem: it runs, "is it running?" misleads
            hint = "check FAME_TLS_CA, and FAME_TLS_CERT and FAME_TLS_KEY for mutual TLS"
        return f"{exc} ({hint})"  # it names the URL and the reason
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"cannot reach the sentinel at {url}: {reason} ({hint})"
    if isinstance(exc, WireError) and exc.code == "too_large":
        return (
            f"{exc}: a value must fit in one message; store a large one in pieces under"
            " several keys, or keep it in a file and store its path"
        )
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    known = describe(exc)
    if known is not None:
        return known
    name = type(exc).__name__
    if "Handshake" in name or "Connection" in name or "Rejected" in name:
        return f"cannot reach the sentinel at {url}: {exc or name} ({hint})"
    return f"{name}: {exc}"


def _store_value(args: argparse.Namespace) -> str:
    """The value ``store`` stores: VALUE, standard input for ``-``, or ``--file PATH``'s content."""
    if args.value_file is not None and args.value is not None:
        raise ClientError("store: give VALUE or --file PATH, not both")
    if args.value_file is not None:
        path = Path(args.value_file)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ClientError(f"store --file: {path} does not exist") from None
        except IsADirectoryError:
            raise ClientError(f"store --file: {path} is a directory") from None
        except OSError as exc:
            raise ClientError(f"store --file: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ClientError(f"store --file: {path} is not UTF-8 text") from None
    if args.value is None:
        raise ClientError(
            "store: give the value to store: store KEY VALUE, store KEY - (standard input)"
            " or store KEY --file PATH"
        )
    if args.value == "-":
        try:
            return sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ClientError("store -: standard input is not UTF-8 text") from None
    return str(args.value)


def _not_a_project(project: Path) -> str:
    """A hint appended to a setup failure when ``project`` is no fame project at all."""
    if (project / SENTINEL_CONF).is_file():
        return ""
    return (
        f" ({project} is not a fame project, nor any directory above it: run from the project"
        f" directory, or pass --project DIR)"
    )


def _token_in_argv(argv: Sequence[str]) -> bool:
    """Whether ``argv`` passes ``--token``, whatever its value looks like.

    Checked before argparse, which reads a value starting with ``-`` (a
    token may) as another option and fails with its own usage message.
    """
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--token" or arg.startswith("--token="):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fame-client``; returns the exit status."""
    disable_core_dumps()
    raw = sys.argv[1:] if argv is None else list(argv)
    if _token_in_argv(raw):
        print(f"{PROG}: {TOKEN_IN_ARGV}", file=sys.stderr)
        return 2
    args = _parser().parse_args(raw)
    if args.token_in_argv:
        print(f"{PROG}: {TOKEN_IN_ARGV}", file=sys.stderr)
        return 2
    project = Path.cwd()
    try:
        project = find_project(args.project)
        settings = load_settings([project / SENTINEL_CONF, project / SECRETS_FILE], optional=True)
        configure_logging(settings, show_envelopes=args.verbose, default_level="warning")
        configure_tracing(settings)
        if args.command == "store":
            args.value = _store_value(args)
        if args.token_file is not None:
            token: str | None = read_token_file(args.token_file, sys.stdin)
        else:
            token = client_token(settings)
        url = find_sentinel(args.url, settings, project).url
        tls = client_tls(settings)
    except Exception as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    try:
        keys = sentinel_keys(settings, project)
    except SettingError as exc:
        inline = settings.get("FAME_SENTINEL_KEYS", "").strip()
        print(f"{PROG}: {exc}{'' if inline else _not_a_project(project)}", file=sys.stderr)
        return 1
    target = _Target(url, token, tls, keys, project / SECRETS_FILE)
    try:
        return trio.run(_run, args, target)
    except ClientError as exc:
        for line in str(exc).splitlines():  # one line per error
            print(f"{PROG}: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
