"""Backends by mode name; a backend's module is imported only when it is asked for.

The registry itself (built-in modes, :func:`register`, the ``remotemap.backends`` entry points)
lives in :mod:`remotemap.config.modes`, below the config, which reads it to check each mode's
config section. It is imported here only inside the functions: this package is the parent of
modules the cluster engine runs on hosts that have no more than the worker's needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # served by __getattr__: the cluster engine starts faster without it
    from remotemap.backends.base import Backend

#: The entry-point group a distribution declares its modes in (``NAME = "module:Class"``).
GROUP = "remotemap.backends"


def register(name: str, target: str, *, section: str | None = None,
             replace: bool = False) -> None:
    """Add mode ``name`` whose backend is ``target``, ``"module:Class"`` (imported when the
    mode is first used). ``section``: ``"module:ATTR"`` of a light module holding its config
    :class:`~remotemap.config.Section`, ``""`` if it takes no options, None (default) for the
    class's ``config_section``. A taken name is refused (ValueError) unless ``replace=True``.
    """
    from remotemap.config.modes import register as register_mode

    register_mode(name, target, section=section, replace=replace)


def backend_names() -> list[str]:
    """Every mode name: built-in, registered, then installed plug-ins."""
    from remotemap.config.modes import mode_names

    return mode_names()


def get_backend_class(name: str) -> type[Backend]:
    """The backend class for mode ``name``; ValueError listing the valid names when there is no
    such mode, ModeLoadError (an ImportError and a BackendUnavailable) naming the
    "module:Class" and the plug-in's entry point when it cannot be loaded."""
    from remotemap.backends.base import Backend
    from remotemap.config.modes import ModeLoadError, load_backend_class, mode_target

    cls = load_backend_class(name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ModeLoadError(f"backend of mode {name!r}: {mode_target(name)} is "
                            f"{cls!r:.80}, not a subclass of remotemap.backends.Backend")
    if getattr(cls, "name", None) != name:
        raise ModeLoadError(f"backend of mode {name!r}: {mode_target(name)} has name = "
                            f"{getattr(cls, 'name', None)!r}; it must be {name!r}")
    return cls


def unavailable_reason(name: str, settings: Mapping[str, Any]) -> str | None:
    """None when mode ``name`` can run here with ``settings`` (its config section merged with
    the call's options), else why not (an import failure counts)."""
    try:
        cls = get_backend_class(name)
    except ImportError as exc:
        return f"cannot import its module: {exc}"
    return cls.unavailable_reason(settings)


def __getattr__(attribute: str) -> Any:
    # ``_REGISTRY`` (name -> "module:Class") is the registry's own table, for code and tests
    # that set an entry directly; served lazily for the reason in the module docstring.
    if attribute == "_REGISTRY":
        from remotemap.config.modes import TARGETS

        return TARGETS
    if attribute == "Backend":
        from remotemap.backends.base import Backend

        return Backend
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


__all__ = ["GROUP", "Backend", "backend_names", "get_backend_class", "register",
           "unavailable_reason"]
