"""Resolving a host spec the way OpenSSH does: arguments, then the ssh config file, then defaults.

``resolve_host("gpu1")`` reads ``~/.ssh/config`` (paramiko's parser: ``Host``/``Match`` blocks,
first value wins, ``%h``-style tokens) and returns a :class:`HostSpec` that records, for each
setting, where its value came from.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from remotemap.errors import ConfigError
from remotemap.ssh.known_hosts import known_hosts_name
from remotemap.ssh.lib import import_paramiko_quietly

HostKeyPolicy = Literal["reject", "accept-new"]
HOST_KEY_POLICIES: tuple[HostKeyPolicy, ...] = ("reject", "accept-new")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_KEEPALIVE = 30.0
#: Tried in this order when no IdentityFile is configured (as OpenSSH does, minus DSA).
DEFAULT_IDENTITY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"

PathArg = str | os.PathLike[str]

# ssh_config StrictHostKeyChecking -> our policy. "no" still never accepts a changed key.
_STRICT_VALUES: dict[str, HostKeyPolicy] = {
    "yes": "reject",
    "ask": "reject",
    "accept-new": "accept-new",
    "no": "accept-new",
    "off": "accept-new",
}


@dataclass(frozen=True)
class HostSpec:
    """Everything needed to reach one host, resolved, and where each value came from."""

    alias: str
    hostname: str
    port: int
    user: str
    key_files: tuple[Path, ...] = ()
    proxy_command: str | None = None
    proxy_jump: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    keepalive: float = DEFAULT_KEEPALIVE
    #: Files read for host keys; ``accept-new`` appends to the first one.
    known_hosts: tuple[Path, ...] = ()
    host_key_alias: str | None = None
    host_key_policy: HostKeyPolicy = "reject"
    ssh_config: Path | None = None
    #: Setting name -> "argument", "ssh config PATH" or "default".
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def target(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name looked up in known_hosts: HostKeyAlias, else ``host``/``[host]:port``."""
        return self.host_key_alias or known_hosts_name(self.hostname, self.port)

    def source(self, setting: str) -> str:
        return self.sources.get(setting, "default")


def split_host_spec(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (``[v6addr]:port`` too) as ``(user, host, port)``."""
    if spec.startswith("ssh://"):
        spec = spec[len("ssh://") :].rstrip("/")
    user: str | None = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port: int | None = None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            port = _parse_port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = _parse_port(port_text, spec)
    else:
        host = spec
    if not host:
        raise ConfigError(f"no host name in host spec {spec!r}")
    return user or None, host, port


def _parse_port(text: str, spec: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"bad port {text!r} in host spec {spec!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} out of range in host spec {spec!r}")
    return port


def _paths(value: PathArg | Sequence[PathArg]) -> tuple[Path, ...]:
    if isinstance(value, str | os.PathLike):
        return (Path(value).expanduser(),)
    return tuple(Path(v).expanduser() for v in value)


def _read_ssh_config(path: PathArg | None, host: str) -> tuple[dict[str, Any], Path | None]:
    """The lookup of ``host`` in the config file, and the file (None if there was none)."""
    import_paramiko_quietly()
    import paramiko

    explicit = path is not None
    config_path = Path(path if path is not None else DEFAULT_SSH_CONFIG).expanduser()
    try:
        config = paramiko.SSHConfig.from_path(str(config_path))
    except FileNotFoundError:
        if explicit:
            raise ConfigError("ssh config file not found", path=config_path) from None
        return {}, None
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
        raise ConfigError(f"cannot parse ssh config: {exc}", path=config_path) from None
    return dict(config.lookup(host)), config_path


class _Lookup:
    """What the ssh config says for one host, and where each resolved setting came from."""

    def __init__(self, cfg: dict[str, Any], cfg_path: Path | None) -> None:
        self.cfg = cfg
        self.cfg_path = cfg_path
        self.from_cfg = f"ssh config {cfg_path}"
        #: Setting name -> "argument", "host spec", "ssh config PATH" or "default".
        self.sources: dict[str, str] = {}

    def pick(self, setting: str, explicit: Any, from_spec: Any, cfg_key: str,
             default: Any) -> Any:
        """The first of: the argument, the host spec, the config's value (``none`` is unset
        there, as in OpenSSH), the default; noting which it was."""
        for value, source in ((explicit, "argument"), (from_spec, "host spec")):
            if value is not None:
                self.sources[setting] = source
                return value
        value = self.cfg.get(cfg_key)
        if value is not None and str(value).lower() != "none":
            self.sources[setting] = self.from_cfg
            return value
        self.sources[setting] = "default"
        return default


def _key_files(given: PathArg | Sequence[PathArg] | None, found: _Lookup) -> tuple[Path, ...]:
    """Which identity files to offer: the argument's, else the config's IdentityFile, else
    the default ones that exist."""
    if given is not None:
        found.sources["key_files"] = "argument"
        return _paths(given)
    if found.cfg.get("identityfile"):
        found.sources["key_files"] = found.from_cfg
        return _paths(found.cfg["identityfile"])
    found.sources["key_files"] = "default"
    return tuple(p for p in _paths(DEFAULT_IDENTITY_FILES) if p.exists())


def _known_hosts_files(given: PathArg | Sequence[PathArg] | None,
                       found: _Lookup) -> tuple[Path, ...]:
    """Which files hold the known host keys, in lookup order: the argument's, then the
    user's (UserKnownHostsFile, else ~/.ssh/known_hosts), then the global ones."""
    user_files = found.pick("known_hosts", None, None, "userknownhostsfile",
                            DEFAULT_USER_KNOWN_HOSTS)
    global_files = found.cfg.get("globalknownhostsfile", GLOBAL_KNOWN_HOSTS)
    files = _paths(str(user_files).split()) + _paths(str(global_files).split())
    if given is None:
        return files
    found.sources["known_hosts"] = "argument"
    return _paths(given) + files


def _host_key_policy(given: HostKeyPolicy | None, found: _Lookup, alias: str) -> HostKeyPolicy:
    """Whether an unknown host key is refused or accepted: the argument (one of
    HOST_KEY_POLICIES), else the config's StrictHostKeyChecking, else ``reject``."""
    value = found.pick("host_key_policy", given, None, "stricthostkeychecking", None)
    if value is None:
        return "reject"
    if found.sources["host_key_policy"] == "argument":
        if value not in HOST_KEY_POLICIES:
            raise ConfigError(f"invalid host_key_policy: {value!r}, expected one of "
                              f"{list(HOST_KEY_POLICIES)}")
        return cast(HostKeyPolicy, value)
    try:
        return _STRICT_VALUES[str(value).lower()]
    except KeyError:
        raise ConfigError(f"invalid StrictHostKeyChecking {value!r} for host {alias}",
                          path=found.cfg_path) from None


def resolve_host(
    host: str,
    *,
    user: str | None = None,
    port: int | None = None,
    key_file: PathArg | Sequence[PathArg] | None = None,
    known_hosts: PathArg | Sequence[PathArg] | None = None,
    ssh_config: PathArg | None = None,
    host_key_policy: HostKeyPolicy | None = None,
    connect_timeout: float | None = None,
    keepalive: float | None = None,
    proxy_command: str | None = None,
    proxy_jump: str | None = None,
) -> HostSpec:
    """Resolve ``[user@]host[:port]``: arguments beat the host spec, which beats the ssh config,
    which beats the defaults (OpenSSH's order; the config's first matching value wins).

    ``ssh_config`` defaults to ``~/.ssh/config`` (skipped when absent); pass ``os.devnull`` to
    read none. ``known_hosts`` files are read before the user's known_hosts file (the config's
    ``UserKnownHostsFile``, else ``~/.ssh/known_hosts``) and the global one; ``accept-new``
    writes to the first file of that list.
    """
    spec_user, alias, spec_port = split_host_spec(host)
    found = _Lookup(*_read_ssh_config(ssh_config, alias))
    pick = found.pick
    hostname = found.cfg.get("hostname", alias)
    found.sources["hostname"] = found.from_cfg if hostname != alias else "host spec"
    resolved_port = _parse_port(str(pick("port", port, spec_port, "port", 22)), host)
    resolved_user = str(pick("user", user, spec_user, "user", None) or getpass.getuser())
    keys = _key_files(key_file, found)
    hosts_files = _known_hosts_files(known_hosts, found)
    policy = _host_key_policy(host_key_policy, found, alias)
    return HostSpec(
        alias=alias,
        hostname=str(hostname),
        port=resolved_port,
        user=resolved_user,
        key_files=keys,
        proxy_command=pick("proxy_command", proxy_command, None, "proxycommand", None),
        proxy_jump=pick("proxy_jump", proxy_jump, None, "proxyjump", None),
        connect_timeout=float(pick("connect_timeout", connect_timeout, None, "connecttimeout",
                                   DEFAULT_CONNECT_TIMEOUT)),
        keepalive=float(pick("keepalive", keepalive, None, "serveraliveinterval",
                             DEFAULT_KEEPALIVE)),
        known_hosts=hosts_files,
        host_key_alias=pick("host_key_alias", None, None, "hostkeyalias", None),
        host_key_policy=policy,
        ssh_config=found.cfg_path,
        sources=found.sources,
    )


def connection_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[ssh]`` settings that say how to connect, as keyword arguments for
    :class:`remotemap.ssh.Connection` and :func:`resolve_host` (unset: None, so
    the ssh config and the defaults apply)."""
    keys = ("user", "port", "key_file", "known_hosts", "ssh_config", "host_key_policy",
            "connect_timeout")
    return {key: settings.get(key) or None for key in keys}
