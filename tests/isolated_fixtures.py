"""pytest fixtures for the test hosts that share nothing with the caller: ``isolated_ssh_host``
(session), an :class:`IsolatedSSHHost` (see :mod:`tests.infra.isolated_host` for what the host
has and hides), and ``isolated_cluster_host`` (session), an :class:`IsolatedLoginHost`: such a
host with a single-node SLURM of its own (:mod:`tests.infra.host_slurm`). Loaded from
tests/conftest.py. Skip where the machine cannot run them, or fail with REMOTEMAP_REQUIRE_SSH=1
(and REMOTEMAP_REQUIRE_SLURM=1), as the other ssh and SLURM fixtures do.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.infra.host_python import host_python_dir
from tests.infra.host_slurm import HostSlurm, IsolatedClusterHost
from tests.infra.isolated_host import IsolatedHost
from tests.infra.netns import netns_unavailable_reason
from tests.infra.system import InfraUnavailable, run
from tests.ssh_fixtures import _unavailable


@dataclass(frozen=True)
class IsolatedSSHHost:
    """What a test needs to run tasks on the isolated host, and to look at it.

    Run tasks there with ``remote_map(func, largs, mode="ssh", **host.options())`` (hosts,
    ssh_config, python, remote_dir). The host is reachable only through ``ssh_config``: it
    names ``alias`` with its address, ``user``, ``key_file``, ``known_hosts`` (the host key is
    checked) and the ProxyCommand into its network namespace.

    - ``hostname``, ``user``, ``uid``, ``home``: the host's own; the user exists only there.
    - ``python``: the host's venv (remotemap from a wheel of this checkout); ``remote_dir``:
      where run directories go there (absolute).
    - ``exchange``: the one caller directory the host sees, at the same path (tests' shared
      files: the ``shared_dir`` fixture makes its directories there). Nothing else of the
      caller's is there: not /tmp, /root, /home, the checkout, its .venv.
    - :meth:`ssh`: a command as ``user`` over OpenSSH; :meth:`as_root`: a command as root
      inside the host's namespaces (to look at files ``user`` may not read).
    """

    alias: str
    ssh_config: Path
    address: str
    hostname: str
    user: str
    uid: int
    home: PurePosixPath
    key_file: Path
    known_hosts: Path
    python: str
    remote_dir: str
    exchange: Path
    host: IsolatedHost

    def options(self) -> dict[str, Any]:
        return {"hosts": [self.alias], "ssh_config": str(self.ssh_config),
                "python": self.python, "remote_dir": self.remote_dir}  # fmt: skip

    def ssh(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", self.alias, command]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def as_root(self, argv: Sequence[str], timeout: float = 30) -> str:
        assert self.host.server is not None and self.host.server.pid is not None
        enter = ["nsenter", "-t", str(self.host.server.pid), "--mount", "--uts", "--net"]
        return run([*enter, *argv], timeout=timeout)


@pytest.fixture(scope="session")
def isolated_ssh_host() -> Iterator[IsolatedSSHHost]:
    """The isolated host, started once (a few seconds; the first run on a machine builds its
    venv, then cached by the wheel's contents), ended with every process and mount."""
    reason = netns_unavailable_reason()
    if reason:
        _unavailable("the isolated host", reason)
    try:
        host = IsolatedHost(host_python_dir())
        host.start()
    except InfraUnavailable as exc:
        _unavailable("the isolated host", str(exc))
    try:
        yield IsolatedSSHHost(**_described(host))
    finally:
        host.stop()


def _described(host: IsolatedHost) -> dict[str, Any]:
    """The fields of an :class:`IsolatedSSHHost` for a started ``host``."""
    server = host.server
    assert server is not None
    home = PurePosixPath(host.user.home)
    return dict(alias=server.alias, ssh_config=server.ssh_config, address=host.host_addr,
                hostname=host.hostname, user=host.user.name, uid=host.user.uid, home=home,
                key_file=server.client_key, known_hosts=server.known_hosts,
                python=str(host.python), remote_dir=str(home / ".cache/remotemap/runs"),
                exchange=host.exchange, host=host)  # fmt: skip


@dataclass(frozen=True)
class IsolatedLoginHost(IsolatedSSHHost):
    """An isolated host that is a cluster's login host: its user submits to the host's own
    single-node SLURM (``slurm_conf``, a path there), whose jobs run there too. Run tasks
    there with ``remote_map(func, largs, **host.cluster_options(shared_dir))``."""

    slurm_conf: str
    slurm: HostSlurm

    def cluster_options(self, shared_dir: str) -> dict[str, Any]:
        """The cluster mode through this host, run directories in ``shared_dir`` there."""
        return {"mode": "cluster", "scheduler": "slurm", "host": self.alias,
                "ssh_config": str(self.ssh_config), "python": self.python,
                "slurm_conf": self.slurm_conf, "shared_dir": shared_dir,
                "poll_interval": 0.5, "progress": False}  # fmt: skip


@pytest.fixture(scope="session")
def isolated_cluster_host() -> Iterator[IsolatedLoginHost]:
    """The isolated login host with its SLURM, started once (4-5 s more than the ssh host),
    ended with every daemon, job, process and mount."""
    # Imported here: a plug-in module imported before pytest loads it is not assert-rewritten.
    from tests.slurm_fixtures import skip_or_fail, slurm_unavailable_reason

    reason = netns_unavailable_reason()
    if reason:
        _unavailable("the isolated cluster host", reason)
    reason = slurm_unavailable_reason()
    if reason:
        skip_or_fail(f"the isolated cluster host is unavailable because {reason}")
    try:
        host = IsolatedClusterHost(host_python_dir())
        host.start()
    except InfraUnavailable as exc:
        _unavailable("the isolated cluster host", str(exc))
    try:
        slurm = host.slurm
        assert slurm is not None
        yield IsolatedLoginHost(**_described(host), slurm_conf=str(slurm.conf_path),
                                slurm=slurm)  # fmt: skip
    finally:
        host.stop()
