"""Finding, reading and validating the config file, and the :class:`Config` it yields.

Nothing here writes to disk: loading a config (or importing this module) never creates a file.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from remotemap.config.hints import (
    OPTION_SYNONYMS,
    caller_stacklevel,
    did_you_mean,
    suggestion,
)
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
    return did_you_mean(name, valid, OPTION_SYNONYMS)


#: section name -> the first error found in it, for a file loaded with ``strict=False``.
Problems = dict[str, ConfigError]


def validate_document(
    data: Mapping[str, Any], path: Path, problems: Problems | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Check parsed TOML against :data:`SCHEMA`: the merged values and where each came from.

    The first error is raised, unless ``problems`` is given: then each section's first error
    is put there (the section keeps its defaults) and the other sections are still read.
    """
    values: dict[str, dict[str, Any]] = _Defaults()
    origins: dict[str, str] = {}
    for name, table in data.items():
        try:
            _validate_section(name, table, path, values, origins)
        except ConfigError as exc:
            if problems is None:
                raise
            problems.setdefault(_culprit_section(name, table), exc)
            if name in values and name in SCHEMA:  # the whole section falls back
                values[name] = defaults_of(SCHEMA[name])
                for dotted in [d for d in origins if d.startswith(f"{name}.")]:
                    del origins[dotted]
    return values, origins


class _Defaults(dict[str, dict[str, Any]]):
    """Section name -> its values, each section's defaults made when first asked for: a run
    reads its own mode's section and need not load every plug-in's."""

    def __missing__(self, name: str) -> dict[str, Any]:
        value = self[name] = defaults_of(SCHEMA[name])  # KeyError for an unknown section
        return value


def _culprit_section(name: str, table: Any) -> str:
    """The section an error at top-level name ``name`` is charged to (a key written above
    every header belongs to the section that has such a key)."""
    if isinstance(table, dict) or name in SCHEMA:
        return name
    owners = [s.name for s in SCHEMA.values() if s.key(name) is not None]
    return owners[0] if owners else name


def _validate_section(name: str, table: Any, path: Path, values: dict[str, dict[str, Any]],
                      origins: dict[str, str]) -> None:
    section = SCHEMA.get(name)
    if section is None and name in SECTION_PROBLEMS:
        # A plug-in's section that could not be loaded: say why, not "unknown".
        raise ConfigError(SECTION_PROBLEMS[name], path, name)
    if section is None:
        raise ConfigError(_unknown_section_message(name, table, list(SCHEMA)), path, name)
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
        problems: Problems | None = None,
    ) -> None:
        self.path = path
        self.source = source
        self.exists = exists
        self._values = values if values is not None else validate_document({}, path)[0]
        self._origins = dict(origins or {})
        #: Each section's first error, for a file loaded with ``strict=False``.
        self.problems: Problems = dict(problems or {})
        self._warned = False

    def require(self, used: Sequence[str], warn: bool = True) -> None:
        """Raise the error of the first section in ``used`` that has one; warn once for the
        others' (a typo in ``[cluster]`` must not stop a ``serial`` run)."""
        for name in used:
            if name in self.problems:
                raise self.problems[name]
        unused = [(n, e) for n, e in self.problems.items() if n not in used]
        if unused and warn and not self._warned:
            self._warned = True
            listing = "; ".join(str(e) for _, e in unused)
            warnings.warn(f"ignoring the config file's section{'s' * (len(unused) > 1)} "
                          f"{', '.join(f'[{n}]' for n, _ in unused)}, which this run does "
                          f"not use and which {'are' if len(unused) > 1 else 'is'} not valid: "
                          f"{listing}", UserWarning, stacklevel=caller_stacklevel())

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

    def settings_for(self, section: str, overrides: Mapping[str, Any],
                     common: Sequence[str] = ()) -> dict[str, Any]:
        """Section ``section`` with per-call ``overrides`` validated and merged on top.

        An option no mode knows is a TypeError listing the valid ones (the section's, then the
        ``common`` options the caller takes), with a hint, like an unexpected keyword
        argument; an option of another mode is ignored with one warning naming them all (so a
        call flips to ``mode="serial"`` to debug and nothing else). A wrong type is a
        TypeError and a refused value a ValueError; None means the configured value (as
        joblib's ``n_jobs=None``). A name that is not a declared section (e.g. mode
        ``"serial"``) is a section without options.
        """
        declared: Section | None = SCHEMA.get(section)
        settings = self.section(section) if declared is not None else {}
        foreign: dict[str, list[str]] = {}
        for name, value in overrides.items():
            key = declared.key(name) if declared is not None else None
            if key is None:
                owners = _owners(name, section)
                if not owners:
                    raise TypeError(_unknown_option_message(name, section, declared, common))
                if value is not None:  # None asks for nothing, so nothing is ignored
                    foreign[name] = owners
            elif value is not None:
                settings[name] = coerce_override(key, section, value)
        if foreign:
            named = "; ".join(f"{n} (of {', '.join(o)})" for n, o in foreign.items())
            warnings.warn(f"mode {section!r} ignores the option{'s' * (len(foreign) > 1)} of "
                          f"other modes: {named}", UserWarning, stacklevel=caller_stacklevel())
        return settings


def _owners(option: str, section: str) -> list[str]:
    """The other modes' sections that declare ``option``."""
    return [s.name for s in SCHEMA.values()
            if s.name not in ("remotemap", section) and s.key(option) is not None]


def _unknown_option_message(name: str, section: str, declared: Section | None,
                            common: Sequence[str]) -> str:
    valid = declared.key_names() if declared is not None else []
    listing = ", ".join(valid) if valid else "none (it takes no options)"
    others = sorted({k.name for s in SCHEMA.values() if s.name != "remotemap" for k in s.keys})
    meant = suggestion(name, [*valid, *common], OPTION_SYNONYMS, others)
    hint = f" (did you mean {meant!r}?)" if meant is not None else ""
    if meant is not None and meant not in valid and meant not in common:
        hint = f" (did you mean {meant!r}, an option of {', '.join(_owners(meant, section))}?)"
    shared = f"; common options: {', '.join(common)}" if common else ""
    return f"unknown option {name!r} for {section!r}{hint}; valid options: {listing}{shared}"


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def load_config(path: str | os.PathLike[str] | None = None, *, strict: bool = True) -> Config:
    """Read and validate the config file (see :func:`config_path` for which one).

    A missing file means defaults, unless the path was chosen explicitly (argument or
    ``$REMOTEMAP_CONFIG``): then it is a ConfigError, since a typo there would otherwise be
    silently ignored. With ``strict=False`` an invalid section is kept in
    :attr:`Config.problems` (and falls back to its defaults) instead of raising: a run raises
    only for the sections it uses (:meth:`Config.require`).
    """
    file, source = config_path(path)
    if not file.exists():
        if source in EXPLICIT_SOURCES:
            raise ConfigError(f"config file not found (path given by {source})", file)
        return Config(file, source, exists=False)
    if file.is_dir():
        raise ConfigError(f"is a directory, not a config file (path given by {source})", file)
    problems: Problems | None = None if strict else {}
    values, origins = validate_document(parse_toml(read_document(file), file), file, problems)
    return Config(file, source, exists=True, values=values, origins=origins, problems=problems)


#: Among how many workers this process's CPUs are shared: the product of the worker counts of
#: the calls it runs a task of, set by the local modes in the processes that run tasks. An
#: automatic ``n_jobs`` (0, -1, -2...) of a call made inside a task counts from that share, so
#: nested calls do not multiply the processes (joblib's nested calls likewise fall back to
#: fewer workers). A count, not the share itself: loky need not be imported to pass it on
#: (30 ms of a cold start), only by a nested call that asks for its CPUs.
SHARED_BY_ENV = "REMOTEMAP_SHARED_BY"


def _shared_by() -> int:
    value = os.environ.get(SHARED_BY_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def usable_cpus() -> int:
    """The CPUs this process may use: what loky counts (CPU affinity and cgroup quotas:
    containers, SLURM), divided among the workers it is one of (:data:`SHARED_BY_ENV`)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    return max(1, _loky_cpus(affinity) // _shared_by())


@functools.lru_cache(maxsize=8)
def _loky_cpus(affinity: int) -> int:
    """loky's count, once per CPU affinity (``affinity``: a key only): it reads the cgroup
    files each time, ~0.1 ms, and a loop of small calls asks once or twice a call."""
    from loky import cpu_count  # here: most callers of this module never need it

    return max(1, int(cpu_count()))


def shared_by(n_workers: int) -> str:
    """:data:`SHARED_BY_ENV` for the tasks of ``n_workers`` workers started from this process."""
    return str(_shared_by() * max(1, n_workers))


def resolve_n_jobs(n_jobs: int) -> int:
    """A worker count (>= 1) from an ``n_jobs`` setting.

    Positive values are used as they are; 0 and -1 mean every CPU this process may use, -2 all
    but one, and so on, never fewer than one. Inside a task of a local mode, "every CPU" is
    the task's share (:func:`usable_cpus`).
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int):
        raise TypeError(f"n_jobs must be an integer, got {type(n_jobs).__name__} {n_jobs!r}")
    if n_jobs > 0:
        return n_jobs
    cpus = usable_cpus()
    if n_jobs in (0, -1):
        return cpus
    return max(1, cpus + 1 + n_jobs)
