"""Real OpenSSH servers for tests and benchmarks (not pytest-specific).

- :func:`ensure_test_user`: a non-root login user (``rmtest``).
- :func:`install_remotemap_for_user`: this checkout, pip-installed into a venv of that user
  (Debian's Python), one venv per digest of the checkout.
- :class:`SSHServer`: ``sshd -D`` on 127.0.0.1 and a free port, with its own host key, a client
  key, a known_hosts file and an ssh client config naming it by an alias.
- :class:`NetnsHost`: a second host: sshd inside a network namespace, reached through a
  ``ProxyCommand`` that runs netcat inside a second ("client side") namespace.

THE NETWORK RULE: traffic goes only to 127.0.0.0/8 or into namespaces made here. While those
exist, a blackhole route for their subnet sits in the root namespace (added before anything
else, removed last), so a stray connect to a namespace address fails at once instead of
leaving the machine. Everything is a context manager and cleans up even when a test fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
TEST_USER = "rmtest"
SYSTEM_PYTHON = "/usr/bin/python3"
_LOCK_PATH = Path("/run/lock/remotemap-test-infra.lock")
_NETNS_STATE = Path("/run/remotemap-test-netns")


class InfraUnavailable(RuntimeError):
    """This machine cannot provide the server; the message says why (for a skip reason)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )


def unavailable_reason() -> str | None:
    """Why a loopback sshd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the real-sshd tests need root (to create the test user and run sshd)"
    missing = [t for t in ("sshd", "ssh-keygen", "useradd") if _which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (run scripts/install-sshd.sh)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not installed (run scripts/install-sshd.sh)"
    return None


def netns_unavailable_reason() -> str | None:
    """Why the network-namespace host cannot run here, or None when it can."""
    reason = unavailable_reason()
    if reason:
        return reason
    missing = [t for t in ("ip", "nc", "unshare") if _which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (run scripts/install-sshd.sh)"
    return None


# -- processes ---------------------------------------------------------------------------------


class CommandFailed(subprocess.CalledProcessError):
    """A setup command failed; the message quotes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or ''}{self.output or ''}".rstrip()


def run(argv: Sequence[str], *, timeout: float = 60, **kwargs: object) -> str:
    """Run a setup command; its stdout, or :class:`CommandFailed` quoting its stderr."""
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if done.returncode != 0:
        raise CommandFailed(done.returncode, list(argv), done.stdout, done.stderr)
    return str(done.stdout)


def run_as(uid: int, gid: int, home: Path, argv: Sequence[str], timeout: float = 120) -> str:
    """``run`` as another user, in its home, with a minimal environment."""
    name = pwd.getpwuid(uid).pw_name
    env = {"HOME": str(home), "USER": name, "LOGNAME": name, "LANG": "C.UTF-8",
           "PATH": "/usr/local/bin:/usr/bin:/bin"}  # fmt: skip
    return run(argv, timeout=timeout, user=uid, group=gid, extra_groups=[], cwd=home, env=env)


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state"
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    children = _children() if children is None else children
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that may never reap it counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: Sequence[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.005)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """End ``proc`` and every process under it, leaves first: sshd's session processes outlive
    the listener, so they are found and ended by pid, each while its parent still lives to
    reap it."""
    for attempt in range(20):
        tree = _children()
        alive = [p for p in descendants(proc.pid, tree) if _alive(p)]
        if not alive:
            break
        leaves = [p for p in alive if not any(_alive(c) for c in tree.get(p, []))]
        sig = signal.SIGTERM if attempt < 10 else signal.SIGKILL
        for pid in leaves:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        _wait_gone(leaves, 0.5)
    proc.terminate()
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialize user creation and installs across processes (parallel test runs)."""
    _LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK_PATH, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# -- the test user -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TestUser:
    name: str
    uid: int
    gid: int
    home: Path


def ensure_test_user(name: str = TEST_USER) -> TestUser:
    """Create ``name`` if missing: home dir, bash, unlocked (no password). Its venvs, made by
    Debian's Python (the pyenv one under /root is unreadable to other users), come from
    :func:`install_remotemap_for_user`."""
    reason = unavailable_reason()
    if reason:
        raise InfraUnavailable(reason)
    with _machine_lock():
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name])
            entry = pwd.getpwnam(name)
        if _password_locked(name):
            # useradd leaves "!" (locked): with UsePAM no, sshd refuses locked accounts even
            # for keys. "*" means "no password" without locking.
            run(["usermod", "-p", "*", name])
        return TestUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def _password_locked(name: str) -> bool:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields[1].startswith("!")
    return False


def pip_version_args(source: Path) -> list[str]:
    """The pip options that install the versions the test command chose: the repo's pins
    (constraints.txt), those ``REMOTEMAP_CONSTRAINTS`` names (``scripts/test.sh --oldest``), or
    the newest releases when it is empty (``--newest``). A constraints file is copied to
    ``source`` first, since the test user may not read the checkout."""
    chosen = os.environ.get("REMOTEMAP_CONSTRAINTS", str(REPO / "constraints.txt"))
    if not chosen:
        return ["--upgrade", "--upgrade-strategy", "eager"]
    copy = source / "constraints.txt"
    shutil.copy2(chosen, copy)
    copy.chmod(0o644)
    return ["-c", str(copy)]


def _checkout_digest(checkout: Path) -> str:
    digest = hashlib.sha256()
    digest.update(os.environ.get("REMOTEMAP_CONSTRAINTS", "pinned").encode() + b"\0")
    files = [checkout / "pyproject.toml", checkout / "constraints.txt"]
    files += sorted(p for p in (checkout / "remotemap").rglob("*") if p.is_file())
    for path in files:
        if "__pycache__" in path.parts or not path.exists():
            continue
        digest.update(str(path.relative_to(checkout)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def install_remotemap_for_user(
    user: TestUser, checkout: Path = REPO, *, force: bool = False
) -> Path:
    """A venv of the user's with ``checkout`` pip-installed (non-editable); returns its Python.

    One venv per digest of the sources and the chosen versions, so test runs of two checkouts
    (or of --oldest and --newest) at once never swap the remote code under each other. The
    checkout may be unreadable to the user (under /root): a temporary copy owned by the user is
    installed. Dependencies come from PyPI, at the versions the test command chose
    (:func:`pip_version_args`).
    """
    digest = _checkout_digest(checkout)
    venv = user.home / "venvs" / digest[:16]
    done = venv / ".installed"
    with _machine_lock():
        if not force and done.exists():
            done.touch()  # in use: keep it from being pruned
            return venv / "bin" / "python"
        (user.home / "venvs").mkdir(mode=0o755, exist_ok=True)
        os.chown(user.home / "venvs", user.uid, user.gid)
        if not (venv / "bin" / "python").exists():
            run_as(user.uid, user.gid, user.home, [SYSTEM_PYTHON, "-m", "venv", str(venv)])
        _pip_install_copy(user, checkout, venv / "bin" / "python")
        done.write_text(digest)
        _prune_venvs(user, keep=venv)
    return venv / "bin" / "python"


def _pip_install_copy(user: TestUser, checkout: Path, python: Path) -> None:
    source = Path(tempfile.mkdtemp(prefix="remotemap-src-"))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(checkout / "remotemap", source / "remotemap", ignore=ignore)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (checkout / name).exists():
                shutil.copy2(checkout / name, source / name)
        if not (source / "README.md").exists():
            (source / "README.md").write_text("remotemap\n")  # pyproject names a readme
        pip = [str(python), "-m", "pip", "install", "--quiet", "--no-input"]
        pip += ["--disable-pip-version-check", *pip_version_args(source), str(source)]
        # The build writes next to the sources (egg-info): the copy is the user's.
        for path in [source, *source.rglob("*")]:
            os.chown(path, user.uid, user.gid)
        # pip always rebuilds and reinstalls a local directory, even at the same version.
        run_as(user.uid, user.gid, user.home, pip, timeout=600)
    finally:
        shutil.rmtree(source, ignore_errors=True)


#: A test venv unused this long is removed when another is made.
_VENV_UNUSED = 6 * 3600


def _prune_venvs(user: TestUser, keep: Path) -> None:
    for venv in (user.home / "venvs").iterdir():
        stamp = venv / ".installed"
        unused = time.time() - stamp.stat().st_mtime if stamp.exists() else _VENV_UNUSED
        if venv != keep and unused >= _VENV_UNUSED:
            shutil.rmtree(venv, ignore_errors=True)


# -- keys and files ----------------------------------------------------------------------------


def generate_key(path: Path, comment: str = "remotemap-test") -> Path:
    """A new passphrase-less ed25519 key pair at ``path`` and ``path.pub``; returns ``path``."""
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    run(keygen)
    return path


def fingerprint(pub_path: Path) -> str:
    """``SHA256:...`` of a public key file, as ``ssh-keygen -lf`` prints it."""
    return run(["ssh-keygen", "-lf", str(pub_path)]).split()[1]


def known_hosts_line(name: str, pub_path: Path) -> str:
    key_type, blob = pub_path.read_text().split()[:2]
    return f"{name} {key_type} {blob}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SSHServer:
    """``sshd -D`` for one user, with everything in a temp dir. ``start``/``stop`` or ``with``.

    After start: ``host``, ``port``, ``user``, ``client_key`` (authorized), ``host_key_pub``,
    ``known_hosts`` (knows the host key), ``ssh_config`` (``Host {alias}`` with HostName,
    Port, User, IdentityFile, UserKnownHostsFile and maybe ProxyCommand), ``startup_seconds``.
    """

    def __init__(
        self,
        user: TestUser,
        *,
        listen: str = "127.0.0.1",
        port: int | None = None,
        alias: str = "rmtest-loopback",
        netns: str | None = None,
        hostname: str | None = None,
        proxy_command: str | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        self.user = user
        self.host = listen
        self.port = port or 0
        self.alias = alias
        self.netns = netns
        self.hostname = hostname
        self.proxy_command = proxy_command
        self.extra_config = list(extra_config)
        self.workdir = Path()
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __enter__(self) -> SSHServer:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> SSHServer:
        reason = unavailable_reason()
        if reason:
            raise InfraUnavailable(reason)
        self.workdir = Path(tempfile.mkdtemp(prefix="remotemap-sshd-"))
        try:
            # The user reads authorized_keys as itself: the dir must be world-traversable.
            self.workdir.chmod(0o755)
            self.host_key = generate_key(self.workdir / "ssh_host_ed25519_key", "host")
            self.host_key_pub = self.host_key.with_suffix(".pub")
            self.client_key = generate_key(self.workdir / "client_ed25519", "client")
            self.authorized_keys = self.workdir / "authorized_keys"
            shutil.copy(self.client_key.with_suffix(".pub"), self.authorized_keys)
            self.authorized_keys.chmod(0o644)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir
            for attempt in range(5):
                port = self.port or free_port()
                if self._launch(port):
                    break
                if self.port or attempt == 4:  # a fixed port, or out of luck
                    raise RuntimeError(f"sshd did not start:\n{self.log_text()}")
            self._write_client_files()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, port: int) -> bool:
        """Start sshd on ``port``; False if it exited (e.g. port taken meanwhile)."""
        self.port = port
        self.config_path = self.workdir / "sshd_config"
        self.log_path = self.workdir / "sshd.log"
        self.log_path.write_text("")
        self.config_path.write_text(self._sshd_config())
        argv = [_which("sshd") or "sshd", "-D", "-f", str(self.config_path)]
        argv += ["-E", str(self.log_path)]
        if self.netns:
            # Own UTS namespace too, so `hostname` there proves which host a command ran on.
            name = self.hostname or self.netns
            set_name = ["unshare", "--uts", "/bin/sh", "-c", 'hostname "$0" && exec "$@"', name]
            argv = ["ip", "netns", "exec", self.netns, *set_name, *argv]
        started = time.monotonic()
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        while time.monotonic() - started < 10:
            if "Server listening on" in self.log_text():
                self.startup_seconds = time.monotonic() - started
                return True
            if self._proc.poll() is not None:
                self._proc = None
                return False
            time.sleep(0.005)
        raise RuntimeError(f"sshd not listening after 10 s:\n{self.log_text()}")

    def _sshd_config(self) -> str:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user.name}",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin no",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp",
            "MaxStartups 100:30:200",  # tests open many connections at once
            "MaxSessions 64",
            "LogLevel VERBOSE",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def _write_client_files(self) -> None:
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text(known_hosts_line(self.known_hosts_name, self.host_key_pub))
        self.ssh_config = self.workdir / "ssh_config"
        lines = [
            f"Host {self.alias}",
            f"    HostName {self.host}",
            f"    Port {self.port}",
            f"    User {self.user.name}",
            f"    IdentityFile {self.client_key}",
            f"    UserKnownHostsFile {self.known_hosts}",
        ]
        if self.proxy_command:
            lines.append(f"    ProxyCommand {self.proxy_command}")
        self.ssh_config.write_text("\n".join(lines) + "\n")

    def host_fingerprint(self) -> str:
        return fingerprint(self.host_key_pub)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (AttributeError, FileNotFoundError):
            return ""

    def stop(self) -> None:
        """Kill sshd and every session process under it, then remove the temp dir."""
        if self._proc is not None:
            kill_tree(self._proc)
            self._proc = None
        if self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- a second host in a network namespace -------------------------------------------------------


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
            self.server = SSHServer(
                self.user,
                listen=self.host_addr,
                port=22,
                alias="rmtest-netns",
                netns=self.host_ns,
                hostname=self.hostname,
                proxy_command=f"ip netns exec {self.client_ns} nc %h %p",
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

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
                 "subnet": str(self.subnet)}  # fmt: skip
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
        path.unlink(missing_ok=True)
