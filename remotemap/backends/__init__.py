"""Backends registered by name; a backend's module is imported only when it is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from remotemap.backends.base import Backend

# name -> "module:Class". Importing lazily keeps `import remotemap` (and the remote worker)
# free of joblib, paramiko and soma-workflow until a mode that needs them is used.
_REGISTRY: dict[str, str] = {
    "serial": "remotemap.backends.serial:SerialBackend",
    "local": "remotemap.backends.local:LocalBackend",
    "local_with_dumps": "remotemap.backends.dumps:DumpsBackend",
    "ssh": "remotemap.backends.ssh:SSHBackend",
    "cluster": "remotemap.backends.cluster:ClusterBackend",
}


def backend_names() -> list[str]:
    """Every registered mode name, in registration order."""
    return list(_REGISTRY)


def get_backend_class(name: str) -> type[Backend]:
    """The backend class for mode ``name``; ValueError listing the valid names otherwise."""
    try:
        target = _REGISTRY[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in _REGISTRY)
        raise ValueError(f"unknown mode {name!r}: expected one of {valid}") from None
    module_name, _, class_name = target.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls


def unavailable_reason(name: str, settings: Mapping[str, Any]) -> str | None:
    """None when mode ``name`` can run here with ``settings`` (its config section merged with
    the call's options), else why not (an import failure counts)."""
    try:
        cls = get_backend_class(name)
    except ImportError as exc:
        return f"cannot import its module: {exc}"
    return cls.unavailable_reason(settings)
