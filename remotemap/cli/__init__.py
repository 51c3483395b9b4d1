"""The ``remotemap`` command: inspect and edit the config, check what can run here, try it out.

Each subcommand lives in its own module with a ``register(subparsers, common)`` function that
adds its parser and sets ``handler`` (``Namespace -> exit code``) as a default.
Exit codes: 0 success, 1 failure (invalid config, failed run), 2 usage error (argparse's).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from remotemap._version import __version__
from remotemap.cli import cluster_cmd, config_cmd, demo_cmd, runs_clean, runs_cmd, status_cmd
from remotemap.errors import ConfigError

PROG = "remotemap"


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted before or after the subcommand; SUPPRESS keeps a subcommand's
    # unset copy from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file to use (default: $REMOTEMAP_CONFIG, else "
        "$XDG_CONFIG_HOME/remotemap/config.toml, else ~/.config/remotemap/config.toml)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Run one loop of Python calls in parallel. This command manages the "
        "config file and reports what can run here.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (config_cmd, status_cmd, demo_cmd, runs_cmd, runs_clean, cluster_cmd):
        module.register(subparsers, common)
    return parser


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return, don't exit
        return _exit_code(exc)
    if not hasattr(args, "config"):
        args.config = None
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        print(f"{PROG}: error: a command is required", file=sys.stderr)
        return 2
    try:
        code: int = handler(args)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except PermissionError as exc:  # a config file or directory this user may not use
        print(f"{PROG}: error: {permission_message(exc)}", file=sys.stderr)
        return 1
    return code


def permission_message(exc: PermissionError) -> str:
    """What ``exc`` was refused, said as the fix: the path, the permission it lacks, who."""
    user = _user_name()
    if exc.filename is None:
        return f"permission denied ({exc.strerror}) for user {user}"
    path = os.path.abspath(os.fsdecode(exc.filename))
    # The first directory on the way that cannot be entered is the culprit, whatever the call.
    for parent in _parents(path):
        if not os.access(parent, os.X_OK):
            return (f"{path}: permission denied: user {user} cannot enter directory {parent} "
                    "(no search (x) permission)")
    if os.path.lexists(path):
        missing = [name for flag, name in ((os.R_OK, "read (r)"), (os.W_OK, "write (w)"))
                   if not os.access(path, flag)]
        what = " or ".join(missing) or "the needed"
        return f"{path}: permission denied: user {user} has no {what} permission on it"
    parent = os.path.dirname(path)
    return (f"{path}: permission denied: user {user} cannot create it in {parent} "
            "(no write (w) permission on that directory)")


def _parents(path: str) -> list[str]:
    """The directories above ``path``, nearest last (``/a/b/c`` -> ``/``, ``/a``, ``/a/b``)."""
    parents: list[str] = []
    head = os.path.dirname(path)
    while head not in parents:
        parents.insert(0, head)
        head = os.path.dirname(head)
    return parents


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER
        return f"uid {os.getuid()}"
