"""The mode registry: each mode's backend class ("module:Class") and where its config section is.

It sits with the config (layer 2), below the backends, so that checking a config file can list
the modes and their sections without importing any backend, and nothing is imported until it
is asked for. Modes come from three places, earlier ones winning a name:

1. remotemap's own modes (:data:`BUILTIN_MODES`);
2. :func:`register` at run time;
3. entry points of the group ``remotemap.backends`` (``NAME = "module:Class"``), read once,
   when a mode name is not found among the others or when the list of modes is asked for.

A mode's config section is named after the mode. It is found at the ``section`` target given
when the mode was registered (``"module:ATTR"``, a light module holding a
:class:`~remotemap.config.declarations.Section`; ``""`` = the mode takes no options), else as
the backend class's ``config_section`` attribute (which imports the backend's module).

A plug-in that cannot be loaded is reported with its entry point and distribution, only when
its mode (or its section in a config file) is used: the other modes keep working.
"""

from __future__ import annotations

import importlib
import re
import warnings
from typing import Any

from remotemap.config.declarations import Section
from remotemap.config.hints import MODE_SYNONYMS, did_you_mean
from remotemap.errors import BackendUnavailable

#: The entry-point group a package declares its modes in.
GROUP = "remotemap.backends"

#: name -> (backend "module:Class", section "module:ATTR" or "" for none).
BUILTIN_MODES: dict[str, tuple[str, str]] = {
    "serial": ("remotemap.backends.serial:SerialBackend", ""),
    "local": ("remotemap.backends.local:LocalBackend", "remotemap.backends.local_options:LOCAL"),
    "local_with_dumps": ("remotemap.backends.dumps:DumpsBackend",
                         "remotemap.backends.local_options:LOCAL_WITH_DUMPS"),
    "ssh": ("remotemap.backends.ssh:SSHBackend", "remotemap.backends.ssh_options:SSH"),
    "cluster": ("remotemap.backends.cluster:ClusterBackend",
                "remotemap.backends.cluster.options:CLUSTER"),
}

BUILTIN_ORIGIN = "built into remotemap"
REGISTER_ORIGIN = "registered with remotemap.backends.register()"

#: name -> "module:Class", in registration order (``remotemap.backends._REGISTRY``).
TARGETS: dict[str, str] = {name: target for name, (target, _) in BUILTIN_MODES.items()}
#: name -> the section's "module:ATTR" ("" = no options); absent = the class's config_section.
SECTION_TARGETS: dict[str, str] = {name: sec for name, (_, sec) in BUILTIN_MODES.items()}
#: name -> where the mode came from, for error messages (absent = registered by hand).
ORIGINS: dict[str, str] = dict.fromkeys(BUILTIN_MODES, BUILTIN_ORIGIN)

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
_entry_points_read = False


class ModeLoadError(BackendUnavailable, ImportError):
    """A mode's backend class or config section cannot be loaded; the message names its
    "module:Class" and where the mode came from (entry point and distribution)."""


def register(name: str, target: str, *, section: str | None = None,
             replace: bool = False) -> None:
    """Make ``target`` ("module:Class", a :class:`~remotemap.backends.base.Backend` subclass)
    the backend of mode ``name``. Nothing is imported now.

    ``section`` is where the mode's config section is: ``"module:ATTR"`` of a light module,
    ``""`` for a mode without options, None (default) for the class's ``config_section``.
    A name already taken (built-in, registered, or an installed plug-in's) is refused with
    ValueError unless ``replace=True``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"mode name {name!r} must be letters, digits and '_', starting with "
                         "a letter (it is also the name of its config section)")
    _check_target(target, f"backend of mode {name!r}")
    if section:
        _check_target(section, f"config section of mode {name!r}")
    _read_entry_points()
    if name in TARGETS and not replace:
        raise ValueError(f"mode {name!r} exists already ({_origin(name)}: {TARGETS[name]}); "
                         "pass replace=True to replace it")
    TARGETS[name] = target
    ORIGINS[name] = REGISTER_ORIGIN
    if section is None:
        SECTION_TARGETS.pop(name, None)
    else:
        SECTION_TARGETS[name] = section


def _check_target(target: object, what: str) -> None:
    if not isinstance(target, str) or not _TARGET.match(target):
        raise ValueError(f"{what}: {target!r} is not of the form 'package.module:Name'")


def _origin(name: str) -> str:
    return ORIGINS.get(name, REGISTER_ORIGIN)


def _read_entry_points() -> None:
    """Add the modes that installed distributions declare, once (scanning the installed
    distributions costs a few milliseconds, so only when a mode list or lookup needs it)."""
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=GROUP):
        dist = getattr(entry, "dist", None)
        where = (f"entry point '{entry.name} = {entry.value}' (group {GROUP}) of distribution "
                 f"'{dist.name if dist else '?'} {dist.version if dist else '?'}'")
        if entry.name in TARGETS:
            warnings.warn(f"ignoring {where}: mode {entry.name!r} exists already "
                          f"({_origin(entry.name)})", RuntimeWarning, stacklevel=2)
            continue
        # Extras ("mod:Cls [extra]") are dropped; a malformed value is kept as it is, so
        # that using the mode says what is wrong with it.
        TARGETS[entry.name] = f"{entry.module}:{entry.attr}" if entry.attr else entry.value
        ORIGINS[entry.name] = where


def mode_names() -> list[str]:
    """Every mode: built-ins, registered ones, then installed plug-ins."""
    _read_entry_points()
    return list(TARGETS)


def mode_target(name: str) -> str:
    """The "module:Class" of mode ``name``; ValueError listing the valid names otherwise."""
    if not isinstance(name, str) or name not in TARGETS:
        _read_entry_points()
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in TARGETS)
        hint = did_you_mean(name, list(TARGETS), MODE_SYNONYMS)
        raise ValueError(f"unknown mode {name!r}: expected one of {valid}{hint}") from None


def load_target(name: str, target: str, what: str) -> Any:
    """The object ``target`` ("module:Attr") names, for mode ``name``; ModeLoadError naming
    the target and the mode's origin when it cannot be had (any exception the import raises)."""
    module_name, _, attr = target.partition(":")
    where = f"{what} of mode {name!r} ({_origin(name)})"
    if not _TARGET.match(target):
        raise ModeLoadError(f"{where}: {target!r} is not of the form 'package.module:Name'")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # a plug-in may fail in any way; say which one failed
        raise ModeLoadError(f"{where}: cannot import {module_name!r} for {target!r}: "
                            f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ModeLoadError(f"{where}: {target!r}: {module_name!r} has no attribute "
                                f"{attr!r}") from None
    return found


def load_backend_class(name: str) -> Any:
    """The backend class of mode ``name`` (unchecked: the backends layer checks its type)."""
    return load_target(name, mode_target(name), "backend")


def mode_section(name: str) -> Section | None:
    """The config section of mode ``name``, or None when it takes no options."""
    section_target = SECTION_TARGETS.get(name)
    if section_target == "":
        return None
    if section_target is None:
        found = getattr(load_backend_class(name), "config_section", None)
        what = f"{mode_target(name)}.config_section"
    else:
        found = load_target(name, section_target, "config section")
        what = section_target
    if found is None:
        return None
    if not isinstance(found, Section) or found.name != name:
        raise ModeLoadError(
            f"config section of mode {name!r} ({_origin(name)}): {what} must be a "
            f"remotemap.config.Section named {name!r}, found {found!r:.100}")
    return found


#: name -> why its section could not be loaded, filled by :func:`mode_sections`.
SECTION_PROBLEMS: dict[str, str] = {}


def mode_sections() -> dict[str, Section]:
    """Every mode's section that loads, in mode order; the others' errors go to
    :data:`SECTION_PROBLEMS` (a broken plug-in must not stop the rest of the file's checks)."""
    sections: dict[str, Section] = {}
    SECTION_PROBLEMS.clear()
    for name in mode_names():
        try:
            section = mode_section(name)
        except ModeLoadError as exc:
            SECTION_PROBLEMS[name] = str(exc)
            continue
        if section is not None:
            sections[name] = section
    return sections


def registry_signature() -> tuple[object, ...]:
    """Changes whenever a mode is added or replaced, so a cached schema knows to rebuild."""
    _read_entry_points()
    return tuple(TARGETS.items()), tuple(SECTION_TARGETS.items())
