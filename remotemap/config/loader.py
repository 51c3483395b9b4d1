"""Finding, reading and validating the config file, and the :class:`Config` it yields.

Nothing here writes to disk: loading a config (or importing this module) never creates a file.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from remotemap.config.modes import SECTION_PROBLEMS
from remotemap.config.schema import (
    SCHEMA,
    Section,
    check_value,
    coerce_override,
    defaults_of,
    format_value,
    get_section,
    lookup_key,
    toml_type_name,
)
from remotemap.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    # mypy checks this branch (python_version = 3.10) even where tomli is not installed.
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

ENV_VAR = "REMOTEMAP_CONFIG"
#: Sources naming a file the user asked for on purpose: there a missing file is an error.
EXPLICIT_SOURCES = ("argument", f"${ENV_VAR}")
DEFAULT_ORIGIN = "default"


def config_path(path: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The config file to use and where that choice came from.

    Precedence: ``path`` ("argument") > ``$REMOTEMAP_CONFIG`` > ``$XDG_CONFIG_HOME`` >
    ``~/.config`` ("default"). Empty values count as unset; a relative ``$XDG_CONFIG_HOME`` is
    ignored, as the XDG spec requires.
    """
    if path is not None and os.fspath(path):
        return Path(path).expanduser(), "argument"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), f"${ENV_VAR}"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "remotemap" / "config.toml", "$XDG_CONFIG_HOME"
    return Path.home() / ".config" / "remotemap" / "config.toml", "default"


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    """``text`` parsed as TOML; ConfigError naming ``path`` and the line on a syntax error."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        # tomllib says "(at end of document)" without a line number; give one anyway.
        if "line" not in message:
            message += f" (line {max(1, len(text.splitlines()))})"
        raise ConfigError(f"TOML syntax error: {message}", path) from None
    return data


def read_document(path: Path) -> str:
    """The file's text; ConfigError for anything that stops us reading it as UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc}", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", path) from None


def _did_you_mean(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_document(
    data: Mapping[str, Any], path: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Check parsed TOML against :data:`SCHEMA`: the merged values and where each came from."""
    values = {name: defaults_of(section) for name, section in SCHEMA.items()}
    origins: dict[str, str] = {}
    sections = list(SCHEMA)
    for name, table in data.items():
        section = SCHEMA.get(name)
        if section is None and name in SECTION_PROBLEMS:
            # A plug-in's section that could not be loaded: say why, not "unknown".
            raise ConfigError(SECTION_PROBLEMS[name], path, name)
        if section is None:
            raise ConfigError(_unknown_section_message(name, table, sections), path, name)
        if not isinstance(table, dict):
            raise ConfigError(
                f"{name}: expected a table [{name}], found {toml_type_name(table)} "
                f"{format_value(table)}",
                path,
                name,
            )
        for key_name, value in table.items():
            dotted = f"{name}.{key_name}"
            key = section.key(key_name)
            if key is None:
                valid = section.key_names()
                raise ConfigError(
                    f"unknown key {dotted!r}; valid keys in [{name}]: "
                    f"{', '.join(valid) or '(none)'}{_did_you_mean(key_name, valid)}",
                    path,
                    dotted,
                )
            try:
                values[name][key_name] = check_value(key, dotted, value)
            except ConfigError as exc:
                raise ConfigError(str(exc), path, exc.key or dotted) from None
            origins[dotted] = str(path)
            if key.type == "table":
                for entry, fields in value.items():
                    for field_name in fields:
                        origins[f"{dotted}.{entry}.{field_name}"] = str(path)
    return values, origins


def _unknown_section_message(name: str, value: Any, sections: list[str]) -> str:
    if not isinstance(value, dict):
        # A key written above every [section] header: point at the section that has it.
        owners = [f"[{s.name}]" for s in SCHEMA.values() if s.key(name) is not None]
        hint = f"; put it under {' or '.join(owners)}" if owners else ""
        return (
            f"unknown top-level key {name!r}: settings go inside a section{hint}; "
            f"valid sections: {', '.join(sections)}"
        )
    return (
        f"unknown section [{name}]; valid sections: {', '.join(sections)}"
        f"{_did_you_mean(name, sections)}"
    )


class Config:
    """The effective configuration: defaults merged with one file, remembering who set what."""

    def __init__(
        self,
        path: Path,
        source: str,
        exists: bool,
        values: dict[str, dict[str, Any]] | None = None,
        origins: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.source = source
        self.exists = exists
        self._values = values if values is not None else validate_document({}, path)[0]
        self._origins = dict(origins or {})

    def __repr__(self) -> str:
        state = "exists" if self.exists else "missing"
        return f"Config(path={str(self.path)!r}, source={self.source!r}, {state})"

    def section(self, name: str) -> dict[str, Any]:
        """Every key of section ``name`` (defaults merged with the file); a fresh copy."""
        get_section(name)
        return {k: _copy(v) for k, v in self._values[name].items()}

    def get(self, dotted: str) -> Any:
        """One value by dotted name, e.g. ``"local.n_jobs"``; ConfigError if unknown."""
        section, key, tail = lookup_key(dotted)
        value = self._values[section.name][key.name]
        for part in tail:
            if not isinstance(value, dict) or part not in value:
                raise ConfigError(f"{dotted!r} is not set", key=dotted)
            value = value[part]
        return _copy(value)

    def origin(self, dotted: str) -> str:
        """``"default"`` or the path of the file that set ``dotted``."""
        lookup_key(dotted)
        return self._origins.get(dotted, DEFAULT_ORIGIN)

    def entries(self) -> Iterator[tuple[str, Any, str]]:
        """(dotted key, value, origin) for every setting, in schema order.

        A ``table`` key is spelt out one field per entry, so each line has a single origin.
        """
        for section in SCHEMA.values():
            for key in section.keys:
                dotted = f"{section.name}.{key.name}"
                value = self._values[section.name][key.name]
                if key.type != "table" or not value:
                    yield dotted, _copy(value), self.origin(dotted)
                    continue
                for entry, fields in value.items():
                    for field_name, field_value in fields.items():
                        sub = f"{dotted}.{entry}.{field_name}"
                        yield sub, _copy(field_value), self._origins.get(sub, DEFAULT_ORIGIN)

    def settings_for(self, section: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Section ``section`` with per-call ``overrides`` validated and merged on top.

        An unknown option is a TypeError listing the valid ones, like an unexpected keyword
        argument; a wrong type is a TypeError and a refused value a ValueError. A name that is
        not a declared section (e.g. mode ``"serial"``) is a section without options.
        """
        declared: Section | None = SCHEMA.get(section)
        settings = self.section(section) if declared is not None else {}
        valid = declared.key_names() if declared is not None else []
        for name, value in overrides.items():
            key = declared.key(name) if declared is not None else None
            if key is None:
                listing = ", ".join(valid) if valid else "none (it takes no options)"
                raise TypeError(
                    f"unknown option {name!r} for {section!r}; valid options: {listing}"
                    f"{_did_you_mean(name, valid)}"
                )
            settings[name] = coerce_override(key, section, value)
        return settings


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file (see :func:`config_path` for which one).

    A missing file means defaults, unless the path was chosen explicitly (argument or
    ``$REMOTEMAP_CONFIG``): then it is a ConfigError, since a typo there would otherwise be
    silently ignored.
    """
    file, source = config_path(path)
    if not file.exists():
        if source in EXPLICIT_SOURCES:
            raise ConfigError(f"config file not found (path given by {source})", file)
        return Config(file, source, exists=False)
    if file.is_dir():
        raise ConfigError(f"is a directory, not a config file (path given by {source})", file)
    values, origins = validate_document(parse_toml(read_document(file), file), file)
    return Config(file, source, exists=True, values=values, origins=origins)


def resolve_n_jobs(n_jobs: int) -> int:
    """A worker count (>= 1) from an ``n_jobs`` setting.

    Positive values are used as they are; 0 and -1 mean every CPU this process may use, -2 all
    but one, and so on, never fewer than one.
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int):
        raise TypeError(f"n_jobs must be an integer, got {type(n_jobs).__name__} {n_jobs!r}")
    if n_jobs > 0:
        return n_jobs
    # loky's count (the one joblib uses) honours CPU affinity and cgroup quotas (containers,
    # SLURM); imported here because most callers of this module never need it.
    from loky import cpu_count

    cpus = max(1, int(cpu_count()))
    if n_jobs in (0, -1):
        return cpus
    return max(1, cpus + 1 + n_jobs)
