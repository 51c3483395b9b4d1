"""What the config file may contain: one declaration of every section and key.

Defaults live here, in code, so a missing file or a missing key always has a known meaning.
New sections (``[ssh]``, ``[cluster]``) are added by appending to :data:`SCHEMA`; the loader,
``remotemap config`` and ``remotemap status`` pick them up without further changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from remotemap.errors import ConfigError

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


def _backend_names() -> list[str]:
    # Imported here: the backend registry is cheap, but config must not depend on it at import.
    from remotemap.backends import backend_names

    return backend_names()


_N_JOBS = Key("n_jobs", "int", 0, "worker processes; 0 or -1 = all usable CPUs, -2 = all but one")

_SECTIONS = (
    Section(
        "remotemap",
        "settings that apply to every run",
        (Key("mode", "str", "local", "mode used when a call names none", choices=_backend_names),),
    ),
    Section(
        "local",
        "mode 'local': worker processes on this machine (loky, joblib's executor)",
        (_N_JOBS, Key("chunksize", "int", 0, "tasks per worker batch; 0 = automatic", minimum=0)),
    ),
    Section(
        "local_with_dumps",
        "mode 'local_with_dumps': worker processes that exchange tasks through files",
        (
            _N_JOBS,
            Key("keep_files", "bool", False, "keep the task and result files after the run"),
            Key("temp_dir", "str", "", "where the files go; empty = a private temp dir",
                is_path=True),
        ),
    ),
)

#: How hosts are found and trusted, the same for [ssh] hosts and a [cluster] submitting host.
_HOST_CHECKING = (
    Key("known_hosts", "str", "", "extra known_hosts file (~/.ssh/known_hosts is read too)",
        is_path=True),
    Key("ssh_config", "str", "", "OpenSSH client config; empty = ~/.ssh/config", is_path=True),
    Key("host_key_policy", "str", "reject", "unknown host keys: reject, or accept-new",
        choices=("reject", "accept-new")),
)

_SSH = Section(
    "ssh",
    "mode 'ssh': tasks run on other hosts over SSH (paramiko), results copied back over SFTP",
    (
        Key("hosts", "list[str]", [], "hosts to run on: ssh-config aliases or [user@]host[:port]"),
        Key("user", "str", "", "login user; empty = from ~/.ssh/config, else the local user"),
        Key("port", "int", 0, "SSH port; 0 = from ~/.ssh/config, else 22", minimum=0),
        Key("key_file", "str", "", "private key; empty = ~/.ssh/config, agent, default keys",
            is_path=True),
        *_HOST_CHECKING,
        Key("connect_timeout", "float", 10.0, "seconds to connect before giving a host up",
            minimum=0.1),
        Key("python", "str", "python3", "the Python on the hosts (remotemap installed in it)"),
        Key("remote_dir", "str", ".cache/remotemap/runs",
            "where run directories go on the hosts (relative = under the remote home)"),
        Key("n_jobs", "int", 0, "tasks at once per host; 0 = the host's CPUs"),
        Key("chunksize", "int", 0, "tasks per chunk sent to a host; 0 = automatic", minimum=0),
        Key("keep_remote_files", "bool", False, "keep the run directories on the hosts"),
        Key("fetch", "list[str]", [],
            "glob patterns of files tasks write in their working directory, copied back"),
        Key("fetch_dir", "str", "remotemap-files",
            "local directory the fetched files go to, one subdirectory per task", is_path=True),
    ),
)  # fmt: skip

_CLUSTER = Section(
    "cluster",
    "mode 'cluster': tasks as batch jobs through soma-workflow (local scheduler, SLURM, ...)",
    (
        Key("scheduler", "str", "local", "local (soma-workflow's own), slurm, pbspro or drmaa",
            choices=("local", "slurm", "pbspro", "drmaa")),
        Key("host", "str", "", "submitting host (ssh alias or [user@]host[:port]); empty = here"),
        Key("user", "str", "", "login user on the submitting host; empty = ssh config, local"),
        Key("port", "int", 0, "SSH port of the submitting host; 0 = ssh config, else 22",
            minimum=0),
        Key("key_file", "str", "", "private key for the submitting host; empty = defaults",
            is_path=True),
        *_HOST_CHECKING,
        Key("connect_timeout", "float", 10.0, "seconds to connect to the submitting host",
            minimum=0.1),
        Key("queue", "str", "", "queue / partition; empty = the scheduler's default"),
        Key("walltime", "str", "", "time limit per job (minutes, H:M:S, D-H:M...); empty = "
            "the scheduler's default"),
        Key("memory", "str", "", "memory per job (e.g. 4G); empty = the scheduler's default"),
        Key("cpus_per_task", "int", 0, "CPUs per job; 0 = the scheduler's default", minimum=0),
        Key("native_options", "list[str]", [], "extra scheduler options, one per entry"),
        Key("shared_dir", "str", ".cache/remotemap/cluster",
            "where run directories go on the submitting host (seen by the compute nodes; "
            "relative = under the home)"),
        Key("python", "str", "", "the Python on the cluster; empty = this one here, else python3"),
        Key("tasks_per_job", "int", 0, "tasks per batch job; 0 = automatic", minimum=0),
        Key("slurm_conf", "str", "", "slurm.conf on the submitting host; empty = $SLURM_CONF"),
        Key("poll_interval", "float", 1.0, "seconds between two job-state queries (sacct...)",
            minimum=0.1),
        Key("keep_files", "bool", False, "keep the run directory after the run"),
    ),
)  # fmt: skip

#: Every section by name, in the order ``config show`` lists them.
SCHEMA: dict[str, Section] = {s.name: s for s in (*_SECTIONS, _SSH, _CLUSTER)}


def section_names() -> list[str]:
    return list(SCHEMA)


def get_section(name: str) -> Section:
    """The declared section ``name``; ConfigError listing the valid sections otherwise."""
    try:
        return SCHEMA[name]
    except KeyError:
        raise ConfigError(
            f"unknown section [{name}]; valid sections: {', '.join(SCHEMA)}", key=name
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
    return f"unknown key {dotted!r}; valid keys in [{where}]: {', '.join(valid) or '(none)'}"


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
        value = float(value)
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
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(
            f"{dotted}: {format_value(value)} is too small; the minimum is {key.minimum}",
            key=dotted,
        )
    return value


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
