"""``remotemap config ...``: find, show, query, change, create and check the config file."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from remotemap.config import config_path, load_config
from remotemap.config.editing import init_file, set_value, unset_value
from remotemap.config.schema import format_value, lookup_key
from remotemap.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]

_SOURCE_TEXT = {
    "argument": "the --config option",
    "$REMOTEMAP_CONFIG": "$REMOTEMAP_CONFIG",
    "$XDG_CONFIG_HOME": "$XDG_CONFIG_HOME",
    "default": "the default location",
}


def describe_source(source: str) -> str:
    """Where a config path came from, in words (``config path``, ``status``)."""
    return _SOURCE_TEXT.get(source, source)


def _path_line(args: argparse.Namespace) -> str:
    path, source = config_path(args.config)
    state = "exists" if path.is_file() else "does not exist"
    return f"{path}  (from {describe_source(source)}; {state})"


def cmd_path(args: argparse.Namespace) -> int:
    if args.bare:
        print(config_path(args.config)[0])
    else:
        print(_path_line(args))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"# {_path_line(args)}")
    lines: list[tuple[str, str]] = []
    current = None
    for dotted, value, origin in config.entries():
        section, _, key = dotted.partition(".")
        if section != current:
            if current is not None:
                lines.append(("", ""))
            lines.append((f"[{section}]", ""))
            current = section
        lines.append((f"{key} = {format_value(value)}", origin))
    # Align the origin comments so values read as one column.
    width = max(len(text) for text, origin in lines if origin)
    for text, origin in lines:
        print(f"{text:<{width}}  # {origin}" if origin else text)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    value = load_config(args.config).get(args.key)
    # Strings bare, so `$(remotemap config get local_with_dumps.temp_dir)` is usable as is.
    print(value if isinstance(value, str) else format_value(value))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    path, _ = config_path(args.config)
    value = set_value(path, args.key, args.value)
    print(f"{args.key} = {format_value(value)}  (written to {path})")
    return 0


def cmd_unset(args: argparse.Namespace) -> int:
    path, _ = config_path(args.config)
    if unset_value(path, args.key):
        print(f"removed {args.key} from {path}")
    else:
        print(f"{args.key} is not set in {path}; nothing to do")
    # The file may still be invalid for other reasons: say so rather than stay silent.
    if path.exists():
        load_config(path)
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    path, _ = config_path(args.config)
    if not path.exists():
        init_file(path)
        print(f"created {path} from the example")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    command = [*shlex.split(editor), str(path)]
    try:
        status = subprocess.run(command, check=False).returncode
    except OSError as exc:
        print(f"remotemap: error: cannot run the editor {editor!r}: {exc}", file=sys.stderr)
        return 1
    if status != 0:
        print(f"remotemap: error: the editor exited with status {status}", file=sys.stderr)
        return 1
    try:
        load_config(path)
    except ConfigError as exc:
        print(f"remotemap: error: the edited file is not valid: {exc}", file=sys.stderr)
        print("remotemap: run `remotemap config edit` again to fix it", file=sys.stderr)
        return 1
    print(f"{path}: valid")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    path, _ = config_path(args.config)
    init_file(path, force=args.force)
    print(f"wrote the example config to {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.exists:
        print(f"{config.path}: valid")
    else:
        print(f"{config.path}: valid (no file; the defaults apply)")
    return 0


def _check_key(text: str) -> str:
    # Reject unknown keys at parse time, so typos get argparse's usage error (exit 2).
    try:
        lookup_key(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "config",
        parents=[common],
        help="show, change or check the config file",
        description="Show, change or check the config file. Keys are dotted: SECTION.KEY, "
        "e.g. local.n_jobs.",
    )

    def usage(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=usage)
    sub = parser.add_subparsers(title="config commands", metavar="ACTION")

    def add(name: str, handler: Handler, summary: str, details: str = "") -> Any:
        action = sub.add_parser(
            name, parents=[common], help=summary, description=details or summary
        )
        action.set_defaults(handler=handler)
        return action

    add("path", cmd_path, "print the config file's path and where it came from").add_argument(
        "--bare", action="store_true", help="print only the path"
    )
    add("show", cmd_show, "print every setting with its value and origin")
    add("get", cmd_get, "print one setting's value").add_argument(
        "key", type=_check_key, metavar="KEY", help="dotted key, e.g. local.n_jobs"
    )
    setter = add(
        "set",
        cmd_set,
        "set a value in the config file (keeping its comments)",
        "Set KEY to VALUE in the config file, creating the file if needed. VALUE is read as "
        'TOML when it parses as TOML (4, true, "text", ["a", "b"]), else as plain text. '
        "The file is validated before it is written and is left untouched on error.",
    )
    setter.add_argument("key", type=_check_key, metavar="KEY", help="dotted key")
    setter.add_argument("value", metavar="VALUE", help="the new value")
    add(
        "unset",
        cmd_unset,
        "remove a setting from the config file, so its default applies",
    ).add_argument("key", metavar="KEY", help="dotted key (unknown keys may be removed too)")
    add(
        "edit",
        cmd_edit,
        "open the config file in $VISUAL / $EDITOR, then validate it",
        "Open the config file in $VISUAL, else $EDITOR, else vi (creating it from the example "
        "if missing), then validate it: exit status 1 if the edited file is invalid.",
    )
    add("init", cmd_init, "write the commented example config file").add_argument(
        "--force", action="store_true", help="overwrite an existing file"
    )
    add("validate", cmd_validate, "check the config file: exit status 0 if valid, else 1")
