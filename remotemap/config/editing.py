"""Changing the config file on disk without losing the user's comments and layout.

Edits go through tomlkit (which round-trips comments and formatting), the result is validated
as a whole before anything is written, and the write is atomic: a crash or a refused value
never leaves a half-written or invalid file behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.container import Container
from tomlkit.items import Item, Table

from remotemap.config.loader import parse_toml, read_document, validate_document
from remotemap.config.lock import locked
from remotemap.config.schema import TYPE_NAMES, format_value, lookup_key
from remotemap.errors import ConfigError

#: Mode of a config file we create: it may name hosts and accounts, so keep it private.
NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700


def example_text() -> str:
    """The commented example config shipped with the package."""
    return resources.files("remotemap.config").joinpath("example.toml").read_text("utf-8")


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path``'s content with ``text`` in one step, keeping the file's mode.

    The temporary file sits in the same directory so ``os.replace`` is a rename on one
    filesystem. A symlinked config (dotfile managers) is followed, not replaced by a file.
    """
    target = path.resolve() if path.is_symlink() else path
    parent = target.parent
    if not parent.exists():
        parent.mkdir(mode=NEW_DIR_MODE, parents=True)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def parse_cli_value(raw: str) -> Any:
    """``raw`` as a TOML value (``4``, ``true``, ``"x"``, ``["a", "b"]``), else as plain text.

    Returns a tomlkit item when it parses, so the value is written the way the user typed it.
    """
    try:
        doc = tomlkit.parse(f"value = {raw}\n")
    except tomlkit.exceptions.ParseError:
        return raw
    # "1\nother = 2" parses too, into two keys: that is text, not one value.
    if list(doc) != ["value"]:
        return raw
    return doc.item("value")


def _load_document(path: Path) -> tomlkit.TOMLDocument:
    text = read_document(path) if path.exists() else ""
    parse_toml(text, path)  # tomllib's message names the line; tomlkit's is less helpful
    return tomlkit.parse(text)


def _validated_text(doc: tomlkit.TOMLDocument, path: Path) -> str:
    text = tomlkit.dumps(doc)
    validate_document(parse_toml(text, path), path)
    return text


def _container(doc: tomlkit.TOMLDocument, parts: list[str], create: bool) -> Any:
    """The table that holds the last of ``parts``; None when absent and ``create`` is False."""
    node: Any = doc
    for depth, part in enumerate(parts[:-1]):
        if part not in node:
            if not create:
                return None
            # Tables below a section ([ssh.hosts.NAME]) render as headers of their own;
            # super tables keep tomlkit from writing an empty [ssh.hosts] header first.
            node[part] = tomlkit.table(is_super_table=0 < depth < len(parts) - 2)
        node = node[part]
        if not isinstance(node, (dict, Table, Container)):
            raise ConfigError(f"{'.'.join(parts[: depth + 1])} is not a table", key=part)
    return node


def set_value(path: Path, dotted: str, raw: str) -> Any:
    """Set ``dotted`` to ``raw`` in the file at ``path`` (created if missing); the new value.

    The key must be declared. For a string key the text is taken as it is (``temp_dir 2024`` is
    the directory "2024", not a number). Nothing is written unless the whole file then passes
    validation.
    """
    _, key, tail = lookup_key(dotted)
    if len(tail) == 2:  # a field of one entry of a table key: [section.key.NAME] field
        key = key.field(tail[1]) or key
    item: Any = parse_cli_value(raw)
    if key.type == "str" and not isinstance(_plain(item), str):
        item = raw
    parts = dotted.split(".")
    # Read, change and write under the lock: two `config set` at once would otherwise each
    # write their own change over the file the other read, and one change would be lost.
    with locked(path):
        doc = _load_document(path)
        _container(doc, parts, create=True)[parts[-1]] = item
        text = _validated_text(doc, path)
        atomic_write(path, text)
    return _plain(item)


def unset_value(path: Path, dotted: str, section: bool = False) -> bool:
    """Remove ``dotted`` from the file so its default applies; False if it was not set.

    ``section=True`` removes a whole section (``dotted`` is then a section name), comments and
    all; a section name without it is refused, so a slip cannot drop a section silently.
    Unknown names may be removed too, which is how a file that fails validation gets fixed:
    the caller tells an unknown name apart from one that is merely not set. Removing a key
    cannot make a valid file invalid, so this writes without re-validating.
    """
    parts = dotted.split(".")
    if section != (len(parts) == 1):
        what = "a section" if len(parts) == 1 else "a key, not a section"
        raise ConfigError(f"{dotted!r} is {what}; removing a whole section needs section=True",
                          key=dotted)
    if not path.exists():
        return False
    with locked(path):  # see set_value
        doc = _load_document(path)
        node = _container(doc, parts, create=False)
        if node is None or parts[-1] not in node:
            return False
        del node[parts[-1]]
        atomic_write(path, tomlkit.dumps(doc))
    return True


def change_list(path: Path, dotted: str, raw: str, add: bool) -> tuple[list[str], bool]:
    """Append ``raw`` to the list key ``dotted`` unless it is there (``add``), or remove it.

    Like ``git config --add``: the list is the file's, else the key's default. Returns the new
    list and whether the file changed. Refused, naming the key and its type, for a key that is
    not a list; removing a value the list does not hold is an error naming the value.
    """
    _, key, tail = lookup_key(dotted)
    if len(tail) == 2:  # a field of one entry of a table key
        key = key.field(tail[1]) or key
    if key.type != "list[str]":
        raise ConfigError(
            f"{dotted} is {_a(TYPE_NAMES[key.type])} key, not a list: --add and --remove "
            "work on list keys only; set it with `remotemap config set KEY VALUE`", key=dotted)
    value = _plain(parse_cli_value(raw))
    value = value if isinstance(value, str) else raw
    parts = dotted.split(".")
    with locked(path):  # see set_value
        doc = _load_document(path)
        node = _container(doc, parts, create=True)
        items = node[parts[-1]] if parts[-1] in node else tomlkit.item(list(key.default))
        if not isinstance(items, list):
            raise ConfigError(f"{dotted} is not an array in the file", path, dotted)
        held = [_plain(v) for v in items]
        if add and value in held:
            return held, False
        if not add and value not in held:
            raise ConfigError(f"{dotted} does not contain {format_value(value)}; it holds "
                              f"{format_value(held)}", path, dotted)
        if add:
            items.append(value)
        else:
            for index in reversed(range(len(items))):
                if _plain(items[index]) == value:
                    del items[index]
        node[parts[-1]] = items
        atomic_write(path, _validated_text(doc, path))
    return [_plain(v) for v in items], True


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def init_file(path: Path, force: bool = False) -> None:
    """Write the commented example to ``path``; refuse to overwrite unless ``force``."""
    with locked(path):  # so a `config set` running now is not silently overwritten
        if path.exists() and not force:
            raise ConfigError("already exists; use --force to overwrite it", path)
        if path.is_dir():
            raise ConfigError("is a directory", path)
        atomic_write(path, example_text())


def _plain(value: Any) -> Any:
    """A tomlkit item as plain Python (str, int, list...), anything else unchanged."""
    return value.unwrap() if isinstance(value, Item) else value
