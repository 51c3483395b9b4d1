"""The TOML config file: where it is, what it may hold, and how to read it.

Changing the file lives in :mod:`remotemap.config.editing`, kept out of this namespace so that
``import remotemap`` does not pay for tomlkit.
"""

from remotemap.config.loader import (
    ENV_VAR,
    SHARED_BY_ENV,
    Config,
    config_path,
    load_config,
    resolve_n_jobs,
    shared_by,
)
from remotemap.config.schema import SCHEMA, Key, Section, get_section, lookup_key, section_names

__all__ = [
    "ENV_VAR",
    "SCHEMA",
    "SHARED_BY_ENV",
    "Config",
    "Key",
    "Section",
    "config_path",
    "get_section",
    "load_config",
    "lookup_key",
    "resolve_n_jobs",
    "section_names",
    "shared_by",
]
