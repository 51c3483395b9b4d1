"""How a config section and its keys are declared: :class:`Key` and :class:`Section`.

Kept apart from :mod:`remotemap.config.schema` (which assembles the sections and checks values)
so that the mode registry and each backend's light options module can declare sections without
importing the schema, which itself asks the registry for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: The value kinds a key may hold. ``"table"`` is a table of named sub-tables that all share
#: one layout (``fields``), e.g. one table per SSH host: ``[ssh.hosts.NAME]``.
KeyType = Literal["bool", "int", "float", "str", "list[str]", "table"]

#: How each kind is called in messages: users write TOML, so speak TOML.
TYPE_NAMES: dict[str, str] = {
    "bool": "boolean",
    "int": "integer",
    "float": "float",
    "str": "string",
    "list[str]": "array of strings",
    "table": "table",
}


@dataclass(frozen=True)
class Key:
    """One setting: its kind, default, a one-line description and optional checks."""

    name: str
    type: KeyType
    default: Any
    doc: str
    #: Allowed values: a fixed sequence, or a function called at validation time (so the list
    #: of backends is read only when a file is actually checked).
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    minimum: int | float | None = None
    #: The largest value accepted; None = the ceiling ``schema.check_value`` applies by name.
    maximum: int | float | None = None
    #: A filesystem path: ``~`` is expanded, and per-call overrides may be ``os.PathLike``.
    is_path: bool = False
    #: For ``type="table"``: the keys each named sub-table may hold.
    fields: tuple[Key, ...] = ()

    def valid_choices(self) -> list[Any] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)

    def field(self, name: str) -> Key | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True)
class Section:
    """A ``[name]`` table of the config file."""

    name: str
    doc: str
    keys: tuple[Key, ...] = field(default_factory=tuple)

    def key(self, name: str) -> Key | None:
        return next((k for k in self.keys if k.name == name), None)

    def key_names(self) -> list[str]:
        return [k.name for k in self.keys]
