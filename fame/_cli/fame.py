"""``fame``: run nodes, manage the local services, inspect stores offline.

=====================================  ============================================
``fame sentinel --config FILE...``     run a sentinel in the foreground
``fame node --config FILE... --agent``  run a node hosting agents
``fame keygen``                        print a new master key (or token)
``fame init|up|stop|status|logs|clean``  the local services (what ``just`` runs)
``fame inspect DIR``                   list the namespaces of a storage directory
``fame dump DIR NAMESPACE``            print a namespace as JSON lines
``fame check DIR``                     verify every page and record of a directory
=====================================  ============================================

Settings come from ``--config`` files (``NAME=value`` lines) with the
environment on top; the offline commands read ``conf/*.env`` and
``conf/secrets.env`` by default for the master key. Every failure is one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _services
from ._errors import errors, one_line
from ._settings import AGENT_CONF, SECRETS_FILE, ConfigFileError, load_settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fame", description="fame nodes, services and stores.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config", action="append", default=[], type=Path, metavar="FILE",
            help="NAME=value settings file; repeat to merge (the environment overrides)",
        )  # fmt: skip
        sub.add_argument("--ready-file", type=Path, help="written once the node serves")

    sentinel = commands.add_parser("sentinel", help="run a sentinel in the foreground")
    add_config(sentinel)
    node = commands.add_parser("node", help="run a node hosting agents in the foreground")
    add_config(node)
    node.add_argument(
        "--agent", action="append", default=[], metavar="MODULE:CLASS@ADDRESS",
        help="agent to spawn, e.g. agents.storage_agent:StorageAgent@storage@fame.fabric"
        " (default: FAME_AGENTS from the config)",
    )  # fmt: skip
    commands.add_parser("keygen", help="print a new random key (master key or admission token)")
    commands.add_parser("init", help="write conf/secrets.env unless it exists")
    commands.add_parser("up", help="start the sentinel and the storage agent in the background")
    commands.add_parser("stop", help="stop the background services gracefully")
    commands.add_parser("status", help="show whether the services run")
    logs = commands.add_parser("logs", help="print the end of the services' logs")
    logs.add_argument("-n", type=int, default=40, help="lines per log (default 40)")
    commands.add_parser("clean", help="stop, then remove conf/secrets.env, data/ and run/")
    for name, text in (
        ("inspect", "list the namespaces of a storage directory"),
        ("check", "verify every page and record of a storage directory"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("directory", type=Path)
        sub.add_argument("--config", action="append", default=[], type=Path, metavar="FILE")
    dump = commands.add_parser("dump", help="print a namespace as JSON lines")
    dump.add_argument("directory", type=Path)
    dump.add_argument("namespace")
    dump.add_argument("--config", action="append", default=[], type=Path, metavar="FILE")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    from . import _inspect, _runner

    command = args.command
    if command == "sentinel":
        return _runner.run_sentinel(load_settings(args.config), args.ready_file)
    if command == "node":
        return _runner.run_node(load_settings(args.config), args.agent, args.ready_file)
    if command == "keygen":
        print(secrets.token_urlsafe(32))
        return 0
    if command in ("inspect", "dump", "check"):
        files = args.config or [AGENT_CONF, SECRETS_FILE]
        settings = load_settings(files, optional=not args.config)
        if command == "inspect":
            return _inspect.inspect(args.directory, settings)
        if command == "dump":
            return _inspect.dump(args.directory, args.namespace, settings)
        return _inspect.check(args.directory, settings)
    if command == "logs":
        return _services.logs(args.n)
    actions = {
        "init": _services.init,
        "up": _services.up,
        "stop": _services.stop,
        "status": _services.status,
        "clean": _services.clean,
    }
    return actions[command]()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fame``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except (ConfigFileError, FileNotFoundError) as exc:
        print(f"fame {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        for error in errors(exc):
            print(f"fame {args.command}: {one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
