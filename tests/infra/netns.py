"""A second host for the ssh tests: sshd inside a network namespace (:class:`NetnsHost`),
reached through a ``ProxyCommand`` that runs netcat inside a second ("client side") namespace.

THE NETWORK RULE: traffic goes only to 127.0.0.0/8 or into namespaces made here. While those
exist, a blackhole route for their subnet sits in the root namespace (added before anything
else, removed last), so a stray connect to a namespace address fails at once instead of
leaving the machine. Everything is a context manager and cleans up even when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.infra.login_user import TestUser
from tests.infra.ssh_server import SSHServer
from tests.infra.system import InfraUnavailable, run, unavailable_reason, which

_NETNS_STATE = Path("/run/remotemap-test-netns")


def netns_unavailable_reason() -> str | None:
    """Why the network-namespace host cannot run here, or None when it can."""
    reason = unavailable_reason()
    if reason:
        return reason
    missing = [t for t in ("ip", "nc", "unshare") if which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (run scripts/install-sshd.sh)"
    return None


class NetnsHost:
    """sshd at ``host_addr``:22 inside namespace ``host_ns``, reachable only from namespace
    ``client_ns`` over a veth pair; ``proxy_command`` (``ip netns exec CLIENT nc ADDR 22``)
    gives the root namespace a way in. ``server`` is the :class:`SSHServer` (alias
    ``rmtest-netns`` in its ``ssh_config``)."""

    def __init__(self, user: TestUser, *, hostname: str = "rmtest-netns-host") -> None:
        self.user = user
        self.hostname = hostname
        tag = f"{os.getpid()}-{random.randrange(1 << 16):04x}"
        self.client_ns, self.host_ns = f"rmt-c-{tag}", f"rmt-h-{tag}"
        short = tag.replace("-", "")[-10:]
        self._veth = (f"rc{short}", f"rh{short}")
        self.subnet: ipaddress.IPv4Network | None = None
        self.server: SSHServer | None = None
        self._namespaces: list[str] = []

    @property
    def client_addr(self) -> str:
        assert self.subnet is not None
        return str(self.subnet[1])

    @property
    def host_addr(self) -> str:
        assert self.subnet is not None
        return str(self.subnet[2])

    @property
    def proxy_command(self) -> str:
        return f"ip netns exec {self.client_ns} nc {self.host_addr} 22"

    def __enter__(self) -> NetnsHost:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> NetnsHost:
        reason = netns_unavailable_reason()
        if reason:
            raise InfraUnavailable(reason)
        cleanup_stale_netns()
        try:
            self._blackhole()  # first of all: see the module docstring
            self._save_state()
            for ns in (self.client_ns, self.host_ns):
                try:
                    run(["ip", "netns", "add", ns])
                except subprocess.CalledProcessError as exc:
                    raise InfraUnavailable(f"cannot create network namespaces: {exc}") from exc
                self._namespaces.append(ns)
            self._wire()
            self.server = self._server().start()
            self._save_state()  # again: with the server's files
        except BaseException:
            self.stop()
            raise
        return self

    def _server(self) -> SSHServer:
        return SSHServer(
            self.user,
            listen=self.host_addr,
            port=22,
            alias="rmtest-netns",
            netns=self.host_ns,
            hostname=self.hostname,
            proxy_command=f"ip netns exec {self.client_ns} nc %h %p",
        )

    def leftovers(self) -> list[Path]:
        """Files and directories to remove if this test process dies without cleaning up."""
        return [self.server.workdir] if self.server is not None else []

    def _blackhole(self) -> None:
        """Claim a free /30 in 10.0.0.0/8 with a root-namespace blackhole route (``add``, not
        ``replace``: a route someone else made is never taken over, nor later deleted)."""
        for _ in range(50):
            # 10.200.0.0-10.254.255.255: far from the usual home/office/cloud ranges.
            first = random.randrange((10 << 24) | (200 << 16), 11 << 24) & ~3
            subnet = ipaddress.IPv4Network((first, 30))
            if _in_use(subnet):
                continue
            try:
                run(["ip", "route", "add", "blackhole", str(subnet)])
            except subprocess.CalledProcessError:
                continue  # taken meanwhile
            self.subnet = subnet
            return
        raise RuntimeError("no free private /30 subnet found for the test namespaces")

    def is_blackholed(self) -> bool:
        """Whether the root namespace has the blackhole route for our subnet (checked by tests
        before they try the namespace address from outside)."""
        if self.subnet is None:
            return False
        return "blackhole" in run(["ip", "route", "show", "exact", str(self.subnet)])

    def _wire(self) -> None:
        vc, vh = self._veth
        cidr = self.subnet.prefixlen if self.subnet else 30
        # Made directly inside the namespaces: the veth never exists in the root namespace.
        run(["ip", "link", "add", vc, "netns", self.client_ns,
             "type", "veth", "peer", "name", vh, "netns", self.host_ns])  # fmt: skip
        for ns, dev, addr in ((self.client_ns, vc, self.client_addr),
                              (self.host_ns, vh, self.host_addr)):  # fmt: skip
            run(["ip", "-n", ns, "addr", "add", f"{addr}/{cidr}", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _save_state(self) -> None:
        # Lets a later run clean up after a run that was SIGKILLed (see cleanup_stale_netns).
        _NETNS_STATE.mkdir(parents=True, exist_ok=True)
        state = {"pid": os.getpid(), "namespaces": [self.client_ns, self.host_ns],
                 "subnet": str(self.subnet), "paths": [str(p) for p in self.leftovers()]}
        (_NETNS_STATE / f"{self.client_ns}.json").write_text(json.dumps(state))

    def stop(self) -> None:
        """Kill every process, delete namespaces (and so the veth), then the route."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        _teardown(self._namespaces, str(self.subnet) if self.subnet else None)
        self._namespaces = []
        self.subnet = None
        (_NETNS_STATE / f"{self.client_ns}.json").unlink(missing_ok=True)


def _in_use(subnet: ipaddress.IPv4Network) -> bool:
    """Whether any route or address of the root namespace other than the default touches it."""
    for line in run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        dest = line.split()[0] if line.split() else "default"
        if line.split()[0] in ("broadcast", "local", "blackhole", "unreachable"):
            dest = line.split()[1]
        if dest != "default" and subnet.overlaps(ipaddress.IPv4Network(dest, strict=False)):
            return True
    for line in run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        addr = line.split()[3]
        if ipaddress.IPv4Interface(addr).ip in subnet:
            return True
    return False


def _teardown(namespaces: Sequence[str], subnet: str | None) -> None:
    for ns in namespaces:
        with contextlib.suppress(subprocess.CalledProcessError):
            # Everything still running in our namespace was started by us (sessions, nc).
            for pid in run(["ip", "netns", "pids", ns]).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.CalledProcessError):
            run(["ip", "netns", "del", ns])
    if subnet:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(["ip", "route", "del", "blackhole", subnet])


def cleanup_stale_netns() -> None:
    """Remove namespaces and routes left by test processes that died without cleaning up."""
    if not _NETNS_STATE.exists():
        return
    for path in _NETNS_STATE.glob("*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{state['pid']}").exists():
            continue  # its owner lives on (maybe another test run): not ours to touch
        _teardown(state["namespaces"], state["subnet"])
        for leftover in state.get("paths", []):
            shutil.rmtree(leftover, ignore_errors=True)
        path.unlink(missing_ok=True)
