"""``fame``: run nodes, manage the local services, inspect stores offline.

=====================================  ============================================
``fame sentinel --config FILE...``     run a sentinel in the foreground
``fame node --config FILE... --agent``  run a node hosting agents
``fame keygen [--convert]``            print a new master key (or token)
``fame init``                          make the project directory a project
``fame up|stop|status|logs``           the project's local services
``fame clean [--yes]``                 stop, then delete data/, the secrets, run/ (asks)
``fame status [--watch]``              the services, live from the sentinel; --watch: traffic
``fame inspect DIR``                   list the namespaces of a storage directory
``fame dump DIR NAMESPACE``            print a namespace as JSON lines
``fame check DIR``                     verify every page and record of a directory
``fame migrate DIR --namespace NS``    upgrade a namespace's records to its model's version
``fame backup DIR DEST [--offline]``   a consistent copy of a directory, live or stopped
``fame restore BACKUP --to DIR``       put a verified backup in place of a directory
``fame export DIR NAMESPACE [-o F]``   a namespace as JSON lines (bytes, versions)
``fame import DIR NAMESPACE FILE``     write exported JSON lines into a namespace
``fame salvage DIR NS --to OUT``       copy a damaged namespace's readable records
``fame identity``                      print the project agent's node id and key
``fame enroll [NODE_ID PUBLIC_KEY]``   let a node attach to the project's sentinel
``fame revoke NODE_ID``                remove a node's enrollment, pin and bindings
``fame admin nodes|pins|bindings``     list the sentinel's register (live if it runs)
``fame admin release ADDRESS``         drop the stored binding of an address
``fame rotate token|sentinel-key|...`` a new token or key, the old one for a grace
``fame dlq list|replay|drop``          a stopped node's dead letters (``tell``)
``fame rekey [DIR...]``                re-encrypt the storage under a new master key
=====================================  ============================================

Every command works in the project directory: ``--project DIR`` (before or
after the command), else ``FAME_PROJECT_DIR``, else the current directory.
It changes into it first; paths given on the command line stay relative to
where it was called. Settings come from ``--config`` files (``NAME=value``
lines) with the environment on top; the offline commands read
``conf/agent.env`` and ``conf/secrets.env`` by default for the master key.
Every failure is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, cast

from ._hardening import disable_core_dumps
from ._logs import configure_logging
from ._project import PROJECT_ENV, enter_project, import_from_project
from ._settings import (
    AGENT_CONF,
    SECRETS_FILE,
    ConfigFileError,
    load_settings,
    read_token_file,
)

__all__ = ["main"]


_PROJECT_HELP = f"the project directory (default: {PROJECT_ENV}, else the current directory)"


class _Unused:
    """Stands for the parser of a command that was not given: takes its arguments, keeps none."""

    def __getattr__(self, name: str) -> Callable[..., _Unused]:
        return lambda *args, **kwargs: self


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; ``only``: with that command's sub-parser alone.

    Building all of them costs every run about 8 ms (``fame up`` before it
    starts the services, each service as it starts); the whole parser is
    built when ``only`` is not a command (or not given), so help and errors
    list them all.
    """
    found: list[str] = []
    parser = argparse.ArgumentParser(prog="fame", description="fame nodes, services and stores.")
    parser.add_argument("--project", type=Path, metavar="DIR", help=_PROJECT_HELP)
    # Also accepted after the command (`fame up --project DIR`); SUPPRESS keeps the
    # value given before it when it is not repeated.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                        help=_PROJECT_HELP)  # fmt: skip
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return cast(argparse.ArgumentParser, _Unused())
        found.append(name)
        return commands.add_parser(name, help=help, parents=[common])

    def add_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config", action="append", default=[], type=Path, metavar="FILE",
            help="NAME=value settings file; repeat to merge (the environment overrides)",
        )  # fmt: skip
        sub.add_argument("--ready-file", type=Path, help="written once the node serves")
        sub.add_argument("--gate-stdin", action="store_true", help=argparse.SUPPRESS)  # fame up

    sentinel = command("sentinel", help="run a sentinel in the foreground")
    add_config(sentinel)
    node = command("node", help="run a node hosting agents in the foreground")
    add_config(node)
    node.add_argument(
        "--agent", action="append", default=[], metavar="MODULE:CLASS@ADDRESS",
        help="agent to spawn, e.g. agents.storage_agent:StorageAgent@storage@fame.fabric"
        " (default: FAME_AGENTS from the config)",
    )  # fmt: skip
    node.add_argument("--after", type=Path, help=argparse.SUPPRESS)  # fame up: sentinel's ready
    keygen = command(
        "keygen", help="print a new random key, checked (fk1_...): a master key or a token"
    )
    keygen.add_argument(
        "--convert", action="store_true",
        help="print the current FAME_STORAGE_MASTER_KEY (conf/secrets.env or the environment)"
        " in the checked form instead: the same key, so the data stays readable",
    )  # fmt: skip
    keygen.add_argument("--config", action="append", default=[], type=Path, metavar="FILE")
    command("init", help="write what the project lacks: conf/*.env, the secrets, a starter agent")
    command("up", help="start the sentinel and the agents' node in the background")
    command("stop", help="stop the background services gracefully")
    _status_command(command)
    logs = command("logs", help="print the end of the services' logs")
    logs.add_argument("-n", type=int, default=40, help="lines per log (default 40)")
    _clean_command(command)
    for name, text in (
        ("inspect", "list the namespaces of a storage directory"),
        ("check", "verify every page and record of a storage directory"),
    ):
        sub = command(name, help=text)
        sub.add_argument("directory", type=Path)
        sub.add_argument("--config", action="append", default=[], type=Path, metavar="FILE")
    dump = command("dump", help="print a namespace as JSON lines")
    dump.add_argument("directory", type=Path)
    dump.add_argument("namespace")
    dump.add_argument("--config", action="append", default=[], type=Path, metavar="FILE")
    _admin_commands(command)
    _dlq_command(command)
    _rekey_command(command)
    _migrate_command(command)
    _backup_commands(command)
    _salvage_command(command)
    return parser if only is None or found else _parser()


def _backup_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``fame backup|restore|export|import`` (``_backup``, ``_export``)."""

    def config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config", action="append", default=[], type=Path, metavar="FILE",
            help="settings with the master key (default: conf/agent.env and conf/secrets.env)",
        )  # fmt: skip

    backup = command("backup", "copy a storage directory consistently, even while its node runs")
    backup.add_argument("directory", type=Path, help="the storage directory, e.g. data/agent")
    backup.add_argument("backup_dest", type=Path, metavar="DEST", help="a new directory")
    backup.add_argument(
        "--offline", action="store_true",
        help="copy the files here, and refuse if a running process holds them",
    )  # fmt: skip
    config(backup)
    restore = command("restore", "put a verified backup in place of a storage directory")
    restore.add_argument("backup_dir", type=Path, metavar="BACKUP")
    restore.add_argument("--to", dest="directory", type=Path, required=True, metavar="DIR")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    config(restore)
    export = command("export", "write a namespace as JSON lines: key, value bytes, version")
    export.add_argument("directory", type=Path)
    export.add_argument("namespace")
    export.add_argument("-o", "--output", dest="export_output", type=Path, metavar="FILE")
    export.add_argument("--progress", action="store_true", help="show a progress bar anyway")
    config(export)
    import_ = command("import", "write exported JSON lines into a namespace (idempotent)")
    import_.add_argument("directory", type=Path)
    import_.add_argument("namespace")
    import_.add_argument("import_file", type=Path, metavar="FILE")
    import_.add_argument("--progress", action="store_true", help="show a progress bar anyway")
    config(import_)


def _backup_command(args: argparse.Namespace) -> int:
    from . import _admin, _backup, _export

    files = args.config or [AGENT_CONF, SECRETS_FILE]
    settings = load_settings(files, optional=not args.config)
    command = args.command

    def action() -> int:
        if command == "backup":
            return _backup.backup(args.directory, args.backup_dest, settings, offline=args.offline)
        if command == "restore":
            return _backup.restore(args.backup_dir, args.directory, settings, yes=args.yes)
        if command == "export":
            return _export.export(
                args.directory, args.namespace, args.export_output, settings,
                progress=args.progress,
            )  # fmt: skip
        return _export.import_(
            args.directory, args.namespace, args.import_file, settings, progress=args.progress
        )

    return _admin.run(command, action)


def _status_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``fame status [--watch]``: the services, and the live sentinel's view (``_status``)."""
    status = command("status", "show the services, and what the sentinel has attached and bound")
    status.add_argument(
        "--watch", action="store_true",
        help="redraw the calls per second, latency and queue depth per address until Ctrl-C"
        " (piped: one line per address per interval)",
    )  # fmt: skip
    status.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS",
        help="seconds between two --watch snapshots (default 1)",
    )  # fmt: skip


def _clean_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``fame clean``: asks before it deletes the data (``_clean``)."""
    clean = command("clean", "stop, then remove data/, conf/secrets.env and run/ (asks first)")
    clean.add_argument(
        "--yes", "-y", action="store_true",
        help="do not ask (needed without a terminal): the data and its key are gone for good",
    )  # fmt: skip


def _migrate_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``fame migrate``: a stopped node's namespace to its model's version (``_migrate``)."""
    migrate = command("migrate", "rewrite a namespace's records in its model's current version")
    migrate.add_argument("directory", type=Path)
    migrate.add_argument("--namespace", required=True, metavar="NS")
    migrate.add_argument(
        "--model", required=True, metavar="MODULE:CLASS",
        help="the model with __fame_version__ (and __fame_upgrade__), importable from the project",
    )  # fmt: skip
    migrate.add_argument("--prefix", default="", help="only the keys starting with it")
    migrate.add_argument("--batch", type=int, default=500, help="records per transaction")
    migrate.add_argument("--config", action="append", default=[], type=Path, metavar="FILE")


def _salvage_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``fame salvage``: copy a damaged namespace's readable records (``_salvage``)."""
    salvage = command("salvage", "copy every readable record of a namespace into a new file")
    salvage.add_argument("directory", type=Path, help="the storage directory (left unchanged)")
    salvage.add_argument("namespace")
    salvage.add_argument(
        "--to", required=True, type=Path, metavar="OUT_DIR", dest="out",
        help="where the new file goes (created if needed; an existing file is never replaced)",
    )  # fmt: skip
    salvage.add_argument("--config", action="append", default=[], type=Path, metavar="FILE")


def _dlq_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``fame dlq``: the dead letters of a stopped node (``_dlq``)."""
    dlq = command("dlq", "list, replay or drop a stopped node's dead letters (node.tell)")
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("list", "the dead letters: id, destination, operation, attempts, queued at, last error"),
        ("replay", "put dead letters back in the outbox, attempts reset"),
        ("drop", "forget dead letters"),
    ):
        sub = actions.add_parser(name, help=text)
        if name != "list":
            sub.add_argument("ids", nargs="*", metavar="ID", help="message ids (see list)")
            sub.add_argument("--all", action="store_true", help="every dead letter")
        sub.add_argument(
            "--config", action="append", default=[], type=Path, metavar="FILE",
            help="the node's settings (default: conf/agent.env and conf/secrets.env)",
        )  # fmt: skip
        sub.add_argument(
            "--directory", type=Path, metavar="DIR",
            help="the node's storage directory (default: FAME_STORAGE_DB_DIRECTORY)",
        )  # fmt: skip


def _rekey_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``fame rekey``: a new master key for the stopped project's storage (``_rekey``)."""
    rekey = command("rekey", "re-encrypt every storage file under a new master key (stopped)")
    rekey.add_argument(
        "directories", nargs="*", type=Path, metavar="DIR",
        help="storage directories (default: those of conf/agent.env and conf/sentinel.env)",
    )  # fmt: skip
    rekey.add_argument(
        "--new-key-file", metavar="FILE",
        type=lambda text: text if text == "-" else str(Path(text).absolute()),
        help="read the new master key from FILE, or stdin for - (never argv, which ps shows);"
        " default: a new random one",
    )  # fmt: skip


def _admin_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The offline administration of the sentinel's register (``_admin``)."""
    command("identity", "print this project's agent node id and public key (made if absent)")
    enroll = command("enroll", "enroll a node (default: this project's agent) at the sentinel")
    enroll.add_argument("node_id", nargs="?", metavar="NODE_ID")
    enroll.add_argument("public_key", nargs="?", metavar="PUBLIC_KEY", help="ed25519:...")
    enroll.add_argument("--name", help="the node's name in policies (default: kept, else the id)")
    enroll.add_argument(
        "--rotate-grace", type=float, metavar="SECONDS",
        help="the node's other keys stay valid this long, then end (a key rotation)",
    )  # fmt: skip
    revoke = command("revoke", "remove a node's enrollment, pinned key and bindings")
    revoke.add_argument("node_id", metavar="NODE_ID")
    admin = command("admin", "list or change the sentinel's register (live while it runs)")
    actions = admin.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("nodes", help="enrolled nodes, their names and keys")
    actions.add_parser("pins", help="the public key pinned for each node that attached")
    actions.add_parser("bindings", help="stored bindings: address and owner")
    release = actions.add_parser("release", help="drop the stored binding of an address")
    release.add_argument("address", metavar="ADDRESS")
    rotate = command("rotate", "a new token or key; the old one is accepted for a grace period")
    rotate.add_argument("what", choices=["token", "sentinel-key", "node-key"])
    rotate.add_argument(
        "--grace", type=float, metavar="SECONDS",
        help="how long the old one stays valid (default: 86400, one day)",
    )  # fmt: skip


def _absolute(args: argparse.Namespace) -> None:
    """Make the paths given on the command line absolute before changing directory."""
    for name in (
        "config", "ready_file", "after", "directory", "directories", "backup_dest", "backup_dir",
        "export_output", "import_file", "out",
    ):  # fmt: skip
        value = getattr(args, name, None)
        if isinstance(value, list):
            setattr(args, name, [path.absolute() for path in value])
        elif isinstance(value, Path):
            setattr(args, name, value.absolute())


def _dispatch(args: argparse.Namespace) -> int:
    _absolute(args)
    project = enter_project(args.project)
    command = args.command
    if command == "up":
        from . import _launch

        launched = _launch.launch()  # first: the services import while this process does
        from . import _services

        return _services.up(launched)
    # Each command imports what it needs: `fame sentinel` and `fame node` start
    # sooner and hold less without the offline commands' modules.
    from . import _runner

    if command in ("sentinel", "node") and args.gate_stdin and not _runner.hold(command):
        return 1  # held by `fame up`, which gave up: nothing was opened
    if command == "sentinel":
        return _runner.run_sentinel(
            load_settings(args.config), args.ready_file, lambda: load_settings(args.config)
        )
    if command == "node":
        import_from_project(project)  # the agents FAME_AGENTS names are the project's modules
        return _runner.run_node(
            load_settings(args.config), args.agent, args.ready_file, after=args.after
        )
    if command == "keygen":
        return _keygen(args)
    if command in ("inspect", "dump", "check"):
        from . import _inspect

        files = args.config or [AGENT_CONF, SECRETS_FILE]
        settings = load_settings(files, optional=not args.config)
        if command == "inspect":
            return _inspect.inspect(args.directory, settings)
        if command == "dump":
            return _inspect.dump(args.directory, args.namespace, settings)
        return _inspect.check(args.directory, settings)
    if command in ("identity", "enroll", "revoke", "admin", "rotate"):
        from . import _admin, _rotate

        action = _rotate.rotate if command == "rotate" else getattr(_admin, command)
        name = (
            f"{command} {args.action if command == 'admin' else args.what}"
            if command
            in (
                "admin",
                "rotate",
            )
            else command
        )
        return _admin.run(name, lambda: action(args))
    if command == "dlq":
        from . import _admin, _dlq

        files = args.config or [AGENT_CONF, SECRETS_FILE]
        settings = load_settings(files, optional=not args.config)
        return _admin.run(
            f"dlq {args.action}", lambda: _dlq.dlq(args, settings, own_project=not args.config)
        )
    if command == "rekey":
        from . import _rekey

        new_key = None
        if args.new_key_file is not None:
            new_key = read_token_file(args.new_key_file, sys.stdin, source="--new-key-file")
        return _rekey.rekey(args.directories, new_key)
    if command == "migrate":
        from . import _admin, _migrate

        import_from_project(project)  # the model is one of the project's modules
        files = args.config or [AGENT_CONF, SECRETS_FILE]
        settings = load_settings(files, optional=not args.config)
        return _admin.run(
            "migrate",
            lambda: _migrate.migrate(
                args.directory, args.namespace, args.model, settings,
                prefix=args.prefix, batch=args.batch,
            ),
        )  # fmt: skip
    if command in ("backup", "restore", "export", "import"):
        return _backup_command(args)
    if command == "salvage":
        from . import _salvage

        files = args.config or [AGENT_CONF, SECRETS_FILE]
        settings = load_settings(files, optional=not args.config)
        return _salvage.salvage(args.directory, args.namespace, args.out, settings)
    from . import _services

    if command == "status":
        return _services.status(args.watch, args.interval)
    if command == "logs":
        return _services.logs(args.n)
    if command == "clean":
        return _services.clean(args.yes)
    actions = {
        "init": _services.init,
        "stop": _services.stop,
    }
    return actions[command]()


def _keygen(args: argparse.Namespace) -> int:
    """Print a new key, or with ``--convert`` the current master key in the checked form."""
    from fame.storage import MasterKey, parse_master_key

    if not args.convert:
        print(MasterKey.generate().export())
        return 0
    files = args.config or [SECRETS_FILE]
    settings = load_settings(files, optional=not args.config)
    text = settings.get("FAME_STORAGE_MASTER_KEY", "")
    if not text.strip():
        raise ConfigFileError(
            f"FAME_STORAGE_MASTER_KEY is not set (in {', '.join(map(str, files))} or the"
            " environment): there is no key to convert"
        )
    print(parse_master_key(text).export())  # refused as at start if it is not a valid key
    return 0


_ran: str | None = None
"""The command :func:`main` ran (see :func:`_leave`)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fame``; returns the exit status."""
    disable_core_dumps()  # before any secret is read: no core dump, no ptrace, for every command
    global _ran
    words = sys.argv[1:] if argv is None else list(argv)
    args = _parser(words[0] if words and not words[0].startswith("-") else None).parse_args(words)
    _ran = args.command
    try:
        if args.command != "up":  # up: once it has started the services (see _launch)
            configure_logging(os.environ)  # FAME_LOG_*; sentinel and node again with their --config
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except (ConfigFileError, FileNotFoundError) as exc:
        print(f"fame {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from ._errors import errors, one_line

        for error in errors(exc):
            print(f"fame {args.command}: {one_line(error)}", file=sys.stderr)
        return 1


def _leave(status: int) -> NoReturn:
    """Exit with ``status``; after ``fame up``, without tearing the interpreter down.

    ``fame up`` has imported most of fame, trio and SQLCipher to enroll and
    probe; finalizing all of that (about 0.1 s of CPU) delays the shell's
    prompt for nothing once the services run: its files are closed and its
    output is flushed here.
    """
    if _ran != "up":
        sys.exit(status)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    _leave(main())
