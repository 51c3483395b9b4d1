"""``remotemap status``: which config is used, whether it is valid, and which modes can run here.

The report is a list of blocks (:data:`REPORT_BLOCKS`), each printing one part and saying
whether all is well. Later parts (SSH hosts, with an option that connects to them; cluster
runs) are added by appending a block and, if they need one, an option in :func:`register`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from remotemap._version import __version__
from remotemap.backends import backend_names, unavailable_reason
from remotemap.cli.config_cmd import describe_source
from remotemap.cli.status_context import ReportBlock, StatusContext
from remotemap.config import Config, config_path, load_config
from remotemap.errors import ConfigError


def config_block(ctx: StatusContext) -> bool:
    ctx.line(f"config file: {ctx.path}")
    ctx.line(f"  chosen by: {describe_source(ctx.source)}")
    ctx.line(f"  exists:    {'yes' if ctx.path.is_file() else 'no (the defaults apply)'}")
    if ctx.error is None:
        ctx.line("  valid:     yes")
        return True
    ctx.line("  valid:     NO")
    for text in str(ctx.error).splitlines():
        ctx.line(f"    {text}")
    return False


def mode_block(ctx: StatusContext) -> bool:
    mode = ctx.config.get("remotemap.mode")
    ctx.line(f"default mode: {mode}  (from {ctx.config.origin('remotemap.mode')})")
    return True


def backends_block(ctx: StatusContext) -> bool:
    ctx.line("modes:")
    names = backend_names()
    width = max(len(n) for n in names)
    default_mode = ctx.config.get("remotemap.mode")
    ok = True
    for name in names:
        try:
            reason = unavailable_reason(name, ctx.config.settings_for(name, {}))
        except Exception as exc:  # a broken backend must not hide the others
            reason = f"{type(exc).__name__}: {exc}"
        state = "available" if reason is None else f"not available: {reason}"
        ctx.line(f"  {name:<{width}}  {state}")
        # Only the mode used by default makes the status fail: the others are opt-in.
        if reason is not None and name == default_mode:
            ok = False
    return ok


def _ssh_block(ctx: StatusContext) -> bool:
    from remotemap.cli.ssh_status import ssh_block

    return ssh_block(ctx)


def _workflow_block(ctx: StatusContext) -> bool:
    from remotemap.cli.workflow_status import workflow_block

    return workflow_block(ctx)


REPORT_BLOCKS: list[ReportBlock] = [config_block, mode_block, backends_block, _ssh_block,
                                    _workflow_block]


def cmd_status(args: argparse.Namespace) -> int:
    path, source = config_path(args.config)
    error: ConfigError | None = None
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        error = exc
        config = Config(path, source, exists=path.is_file())
    ctx = StatusContext(args, path, source, config, error, sys.stdout)
    ctx.line(f"remotemap {__version__}")
    ok = True
    for block in REPORT_BLOCKS:
        ok = block(ctx) and ok
    return 0 if ok else 1


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "status",
        parents=[common],
        help="report the config in use and which modes can run here",
        description="Report which config file is used and whether it is valid, the default "
        "mode, and which modes can run here. Exit status 1 when the config is invalid or the "
        "default mode cannot run.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="connect to every configured SSH host and report whether it can run tasks "
        "(reachable, authenticated, host key known, remote Python and remotemap versions)",
    )
    parser.set_defaults(handler=cmd_status)
