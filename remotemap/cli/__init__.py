"""The ``remotemap`` command: inspect and edit the config, check what can run here, try it out.

Each subcommand lives in its own module with a ``register(subparsers, common)`` function that
adds its parser and sets ``handler`` (``Namespace -> exit code``) as a default.
Exit codes: 0 success, 1 failure (invalid config, failed run), 2 usage error (argparse's).
"""

from __future__ import annotations

import argparse
import sys

from remotemap._version import __version__
from remotemap.cli import cluster_cmd, config_cmd, demo_cmd, runs_cmd, status_cmd
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
    for module in (config_cmd, status_cmd, demo_cmd, runs_cmd, cluster_cmd):
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
    return code
