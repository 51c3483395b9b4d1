"""``remotemap config ...``: find, show, query, change, create and check the config file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from remotemap.cli.config_edit import cmd_edit
from remotemap.config import config_path, load_config
from remotemap.config.editing import change_list, init_file, set_value, unset_value
from remotemap.config.schema import format_value, get_section, lookup_key
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
    if args.add or args.remove:
        values, changed = change_list(path, args.key, args.value, add=args.add)
        if not changed:
            print(f"{args.key} already contains {format_value(args.value)}; nothing to do")
            return 0
        print(f"{args.key} = {format_value(values)}  (written to {path})")
        return 0
    value = set_value(path, args.key, args.value)
    print(f"{args.key} = {format_value(value)}  (written to {path})")
    return 0


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """Report ``message`` as argparse does for a bad argument: usage, error, exit status 2."""
    args.parser.print_usage(sys.stderr)
    print(f"{args.parser.prog}: error: {message}", file=sys.stderr)
    return 2


def _unknown_name(args: argparse.Namespace) -> str | None:
    """Why ``args.key`` names no declared key or section (a typo), or None if it names one."""
    try:
        if args.section:
            get_section(args.key)
        else:
            _check_key(args.key)  # the same lookup (and message) as `config get` and `set`
    except (ConfigError, argparse.ArgumentTypeError) as exc:
        return str(exc)
    return None


def cmd_unset(args: argparse.Namespace) -> int:
    path, _ = config_path(args.config)
    if args.section != ("." not in args.key):
        if args.section:
            return _usage_error(args, f"--section takes a section name; {args.key!r} is a key")
        return _usage_error(args, f"{args.key!r} is a whole section: to remove [{args.key}] "
                            "with all its keys and comments, add --section")
    what = f"[{args.key}]" if args.section else args.key
    if not unset_value(path, args.key, section=args.section):
        unknown = _unknown_name(args)
        if unknown is not None:
            return _usage_error(args, f"argument KEY: {unknown}")
        print(f"remotemap: error: {what} is not set in {path}; nothing removed", file=sys.stderr)
        return 1
    print(f"removed {what} from {path}")
    # The file may still be invalid for other reasons: say so rather than stay silent.
    load_config(path)
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


_EDIT_DETAILS = (
    "Open a copy of the config file in $VISUAL, else $EDITOR, else vi (the example if the file "
    "is missing), validate it and only then save it. If it is invalid, a terminal asks: edit "
    "again, discard or save anyway; without one the file is left as it was. Exit status 1 "
    "unless a valid file was saved.")


def _list_options(setter: argparse.ArgumentParser) -> None:
    how = setter.add_mutually_exclusive_group()
    how.add_argument("--add", action="store_true",
                     help="list keys: append VALUE, unless the list holds it already")
    how.add_argument("--remove", action="store_true",
                     help="list keys: remove VALUE (exit status 1 if the list lacks it)")


def _unset_arguments(unsetter: argparse.ArgumentParser) -> None:
    unsetter.add_argument("key", metavar="KEY",
                          help="dotted key (unknown keys in the file may be removed too)")
    unsetter.add_argument("--section", action="store_true",
                          help="KEY is a section: remove it whole, with its comments")
    unsetter.set_defaults(parser=unsetter)  # for its usage line in cmd_unset's errors


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
    add("get", cmd_get, "print one setting's value",
        "Print one setting's value (its default when the file does not set it). Exit status "
        "2 if no such key exists, 1 if the file is invalid.").add_argument(
        "key", type=_check_key, metavar="KEY", help="dotted key, e.g. local.n_jobs"
    )
    setter = add(
        "set",
        cmd_set,
        "set a value in the config file (keeping its comments)",
        "Set KEY to VALUE in the config file, creating the file if needed. VALUE is read as "
        'TOML when it parses as TOML (4, true, "text", ["a", "b"]), else as plain text. '
        "The file is validated before it is written and is left untouched on error. Exit "
        "status 1 for a refused value, 2 if no such key exists.",
    )
    setter.add_argument("key", type=_check_key, metavar="KEY", help="dotted key")
    setter.add_argument("value", metavar="VALUE", help="the new value")
    _list_options(setter)
    _unset_arguments(add(
        "unset",
        cmd_unset,
        "remove a setting from the config file, so its default applies",
        "Remove KEY from the config file, so its default applies. Exit status 1 if KEY is not "
        "set in the file, 2 if no such key exists. Unknown keys that are in the file may be "
        "removed too, to repair it.",
    ))
    add("edit", cmd_edit, "open a copy of the config file in $VISUAL / $EDITOR; save it if valid",
        _EDIT_DETAILS)
    add("init", cmd_init, "write the commented example config file").add_argument(
        "--force", action="store_true", help="overwrite an existing file"
    )
    add("validate", cmd_validate, "check the config file: exit status 0 if valid, else 1")
