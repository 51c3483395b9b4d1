"""What the config file may contain: ``[remotemap]`` and each mode's own section.

Defaults live in the declarations, in code, so a missing file or a missing key always has a
known meaning. Each mode declares its section next to its backend (e.g.
``remotemap/backends/local_options.py``) and the mode registry (:mod:`remotemap.config.modes`)
says where; the loader, ``remotemap config`` and ``remotemap status`` pick a new section up
without further changes. Checking values against the declarations is done here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

from remotemap.config.declarations import TYPE_NAMES, Key, KeyType, Section
from remotemap.config.hints import OPTION_SYNONYMS, did_you_mean
from remotemap.config.modes import (
    BUILTIN_MODES,
    SECTION_TARGETS,
    TARGETS,
    mode_names,
    mode_section,
    mode_sections,
    registry_signature,
)
from remotemap.errors import ConfigError

__all__ = ["SCHEMA", "TYPE_NAMES", "Key", "KeyType", "Section", "check_value", "coerce_override",
           "defaults_of", "format_value", "get_section", "lookup_key", "section_names",
           "toml_type_name"]

_REMOTEMAP = Section(
    "remotemap",
    "settings that apply to every run",
    (Key("mode", "str", "local", "mode used when a call names none", choices=mode_names),
     Key("stream_output", "bool", True, "show what tasks print during a run, each line "
         "prefixed [task N]; false: keep it only captured (failures, stored runs)")),
)


class _Schema(MutableMapping[str, Section]):
    """``[remotemap]`` then every mode's own section, gathered from the mode registry when
    first read and again after a mode is registered (so a plug-in's section is checked like a
    built-in one). Writable, so a test can slot a section in."""

    def __init__(self) -> None:
        self._sections: dict[str, Section] = {}
        self._signature: object = None

    def _current(self) -> dict[str, Section]:
        signature = registry_signature()
        if signature != self._signature:
            self._sections = {"remotemap": _REMOTEMAP, **mode_sections()}
            self._signature = signature
        return self._sections

    def __getitem__(self, name: str) -> Section:
        light = self._light(name)
        return light if light is not None else self._current()[name]

    def _light(self, name: str) -> Section | None:
        """A built-in section, found without reading every installed plug-in's (the scan and
        their imports cost a call's cold start tens of milliseconds): only until the whole
        schema is first built, and while the mode is still the built-in one."""
        if self._signature is not None:
            return None
        if name == "remotemap":
            return _REMOTEMAP
        backend, section = BUILTIN_MODES.get(name, ("", ""))
        if not section or TARGETS.get(name) != backend or SECTION_TARGETS.get(name) != section:
            return None
        return mode_section(name)

    def __setitem__(self, name: str, section: Section) -> None:
        self._current()[name] = section

    def __delitem__(self, name: str) -> None:
        del self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._current()))

    def __len__(self) -> int:
        return len(self._current())


#: Every section by name, in the order ``config show`` lists them.
SCHEMA: MutableMapping[str, Section] = _Schema()


def section_names() -> list[str]:
    return list(SCHEMA)


def get_section(name: str) -> Section:
    """The declared section ``name``; ConfigError listing the valid sections otherwise."""
    try:
        return SCHEMA[name]
    except KeyError:
        raise ConfigError(
            f"unknown section [{name}]; valid sections: {', '.join(SCHEMA)}"
            f"{did_you_mean(name, list(SCHEMA))}", key=name
        ) from None


def lookup_key(dotted: str) -> tuple[Section, Key, list[str]]:
    """Split ``"section.key[.name.field...]"`` into its declarations and the remaining parts.

    The remaining parts address an entry inside a ``table`` key; they are checked here too, so
    ``config get``/``set`` reject a misspelt field before touching anything.
    """
    section_name, _, rest = dotted.partition(".")
    section = get_section(section_name)
    if not rest:
        raise ConfigError(
            f"{dotted!r} is a section, not a key; valid keys in [{section.name}]: "
            f"{', '.join(section.key_names()) or '(none)'}",
            key=dotted,
        )
    key_name, *tail = rest.split(".")
    key = section.key(key_name)
    if key is None:
        raise ConfigError(_unknown_key_message(dotted, section.name, section.key_names()))
    if tail:
        if key.type != "table":
            raise ConfigError(f"{section.name}.{key_name} has no sub-keys", key=dotted)
        if len(tail) > 2 or (len(tail) == 2 and key.field(tail[1]) is None):
            valid = ", ".join(f.name for f in key.fields)
            raise ConfigError(
                f"unknown key {dotted!r}; valid keys in each "
                f"[{section.name}.{key_name}.NAME]: {valid}",
                key=dotted,
            )
    return section, key, tail


def _unknown_key_message(dotted: str, where: str, valid: Sequence[str]) -> str:
    hint = did_you_mean(dotted.rpartition(".")[2], valid, OPTION_SYNONYMS, prefix=f"{where}.")
    return (f"unknown key {dotted!r}; valid keys in [{where}]: {', '.join(valid) or '(none)'}"
            f"{hint}")


def toml_type_name(value: Any) -> str:
    """The TOML name of a Python value's type, for 'found ...' in messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _has_type(value: Any, key_type: KeyType) -> bool:
    # bool is a subclass of int: `n_jobs = true` must not pass as 1.
    if key_type == "bool":
        return isinstance(value, bool)
    if key_type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if key_type == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if key_type == "str":
        return isinstance(value, str)
    if key_type == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict)


def check_value(key: Key, dotted: str, value: Any) -> Any:
    """``value`` made ready for use under ``key``; ConfigError (without a path) if it cannot be.

    The caller adds the file path; ``dotted`` is the full key name used in messages.
    """
    if not _has_type(value, key.type):
        raise ConfigError(
            f"{dotted}: expected {TYPE_NAMES[key.type]}, found {toml_type_name(value)} "
            f"{format_value(value)}",
            key=dotted,
        )
    if key.type == "table":
        return {name: _check_entry(key, f"{dotted}.{name}", entry) for name, entry in value.items()}
    if key.type == "float":
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float: as absurd as inf
            value = math.inf
    elif key.type == "list[str]":
        value = list(value)
    elif key.is_path and value:
        value = os.path.expanduser(value)
    choices = key.valid_choices()
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{dotted}: {format_value(value)} is not a valid value; valid values: "
            + ", ".join(format_value(c) for c in choices),
            key=dotted,
        )
    _check_range(key, dotted, value)
    return value


#: Ceilings for int keys that declare no ``maximum``, by key name. Past them a value is a typo,
#: not a wish: 4096 workers (per host, or per job) is above any machine remotemap targets (the
#: largest common nodes have 512 hardware threads) and far below where the OS would refuse
#: the processes; a TCP port ends at 65535.
_MAXIMA: dict[str, int] = {"n_jobs": 4096, "cpus_per_task": 4096, "port": 65535}
#: Any other int key: what a C int holds, so nothing absurd reaches a system call or a sleep.
_INT_CEILING = 2**31 - 1


def _check_range(key: Key, dotted: str, value: Any) -> None:
    """ConfigError naming ``dotted`` if a number is nan, infinite or out of its bounds."""
    if key.type not in ("int", "float"):
        return
    if key.type == "float" and not math.isfinite(value):
        raise ConfigError(f"{dotted}: {format_value(value)} is not a finite number", key=dotted)
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(
            f"{dotted}: {format_value(value)} is too small; the minimum is {key.minimum}",
            key=dotted,
        )
    maximum = key.maximum
    if maximum is None and key.type == "int":
        maximum = _MAXIMA.get(key.name, _INT_CEILING)
    if maximum is not None and value > maximum:
        raise ConfigError(
            f"{dotted}: {format_value(value)} is too large; the maximum is {maximum}",
            key=dotted,
        )


def _check_entry(key: Key, dotted: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{dotted}: expected table, found {toml_type_name(entry)} {format_value(entry)}",
            key=dotted,
        )
    valid = [f.name for f in key.fields]
    result: dict[str, Any] = {}
    for name, value in entry.items():
        sub = key.field(name)
        if sub is None:
            raise ConfigError(_unknown_key_message(f"{dotted}.{name}", dotted, valid))
        result[name] = check_value(sub, f"{dotted}.{name}", value)
    # Fields the entry leaves out take their defaults, like top-level keys do.
    return {f.name: result.get(f.name, f.default) for f in key.fields}


def format_value(value: Any) -> str:
    """``value`` written as TOML would write it, for messages and ``config show``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def coerce_override(key: Key, section: str, value: Any) -> Any:
    """A per-call option (``remote_map(..., n_jobs=4)``) checked like a file value.

    Raises TypeError for a wrong type and ValueError for a value the checks refuse, as Python
    callers expect from a bad argument.
    """
    if key.is_path and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not _has_type(value, key.type):
        raise TypeError(
            f"option {key.name!r} (config key {section}.{key.name}) expects "
            f"{TYPE_NAMES[key.type]} ({key.type}), got {type(value).__name__} {value!r}"
        )
    try:
        return check_value(key, f"{section}.{key.name}", value)
    except ConfigError as exc:
        raise ValueError(f"option {key.name!r}: {exc}") from None


def defaults_of(section: Section) -> dict[str, Any]:
    """Every key of a section with its default value."""
    return {k.name: _copy_default(k.default) for k in section.keys}


def _copy_default(value: Any) -> Any:
    # Defaults are shared module state; hand out copies of the mutable ones.
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value
