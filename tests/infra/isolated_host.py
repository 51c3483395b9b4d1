"""A test host that shares nothing with the caller but the kernel and the system's programs:
:class:`IsolatedHost`, sshd in its own network namespace (a :class:`NetnsHost`), its own UTS
namespace (hostname) and its own mount namespace, where

- /tmp, /var/tmp, /dev/shm, /home, /root, /run, /mnt, /opt, /srv, the checkout's parent (so
  the checkout and its .venv), this interpreter's prefix and the caller's XDG directories are
  fresh, empty tmpfs mounts (:func:`tests.infra.mounts.caller_paths`);
- the login user (``rmiso``) exists only there: /etc/passwd and /etc/group are copies with
  its line added, bound over the originals, and its home is made on the tmpfs /home;
- Python is its own venv at :data:`HOST_PYTHON_DIR`, with remotemap installed from a wheel
  (:mod:`tests.infra.host_python`);
- sshd's own files (config, host key, authorized key) are at :data:`_SSHD_SEEN_AS`.

One caller directory is there, on purpose: ``exchange`` (at its own path), where tests
leave files for tasks and read what tasks wrote (the tests' window, as a lab's shared scratch
disk would be). The code under test learns of it only through the tasks' arguments.

Everything ends with sshd's process tree and the namespaces (:meth:`NetnsHost.stop`), and if
the test process is killed, at the next start (:func:`tests.infra.netns.cleanup_stale_netns`).
"""

from __future__ import annotations

import grp
import pwd
import shlex
import shutil
import tempfile
from pathlib import Path

from tests.infra.host_python import HOST_PYTHON_DIR
from tests.infra.login_user import REPO, TestUser
from tests.infra.mounts import caller_paths, mount_script
from tests.infra.netns import NetnsHost
from tests.infra.ssh_server import SSHServer

#: The directory the caller shares with the host (see the module docstring): for every test,
#: like /tmp, so a test's shared directory is there whichever host its tasks run on.
EXCHANGE_DIR = Path("/var/tmp/remotemap-exchange")
ISOLATED_USER = "rmiso"
ISOLATED_HOSTNAME = "rmiso-host"
_SSHD_SEEN_AS = Path("/run/remotemap-sshd")


def free_id(start: int = 23000) -> int:
    """A number that is neither a uid nor a gid of this machine (so the host's user owns
    nothing here)."""
    taken = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    return next(i for i in range(start, 60000) if i not in taken)


def exchange_dir(path: Path = EXCHANGE_DIR) -> Path:
    """``path``, made if missing, writable by all with the sticky bit (as /tmp)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o1777)
    return path


class IsolatedHost(NetnsHost):
    """See the module docstring. ``venv`` is the caller-side directory of the host's Python
    (from :func:`tests.infra.host_python.host_python_dir`); ``exchange`` the one directory the
    caller shares with it."""

    def __init__(self, venv: Path, exchange: Path = EXCHANGE_DIR, *, checkout: Path = REPO,
                 user_name: str = ISOLATED_USER, hostname: str = ISOLATED_HOSTNAME) -> None:
        uid = free_id()
        super().__init__(TestUser(user_name, uid, uid, Path("/home") / user_name),
                         hostname=hostname)  # fmt: skip
        self.venv, self.exchange, self.checkout = venv, exchange, checkout
        exchange_dir(exchange)
        self.root = Path(tempfile.mkdtemp(prefix="remotemap-isohost-"))
        self.python = HOST_PYTHON_DIR / "bin" / "python"

    def _server(self) -> SSHServer:
        return SSHServer(
            self.user,
            listen=self.host_addr,
            port=22,
            alias="rmiso",
            netns=self.host_ns,
            hostname=self.hostname,
            proxy_command=f"ip netns exec {self.client_ns} nc %h %p",
            isolate=self._mount_script,
            seen_as=_SSHD_SEEN_AS,
        )

    def _mount_script(self, sshd_dir: Path) -> str:
        etc = self.root / "etc"
        etc.mkdir(mode=0o755, exist_ok=True)
        user = self.user
        passwd = f"{user.name}:*:{user.uid}:{user.gid}::{user.home}:/bin/bash\n"
        (etc / "passwd").write_text(Path("/etc/passwd").read_text() + passwd)
        (etc / "group").write_text(Path("/etc/group").read_text() + f"{user.name}:x:{user.gid}:\n")
        for name in ("passwd", "group"):
            (etc / name).chmod(0o644)
        shown = [(etc / "passwd", Path("/etc/passwd")), (etc / "group", Path("/etc/group")),
                 (sshd_dir, _SSHD_SEEN_AS), (self.venv, HOST_PYTHON_DIR),
                 (self.exchange, self.exchange)]  # fmt: skip
        home = shlex.quote(str(user.home))
        return mount_script(caller_paths(self.checkout), shown) + (
            "mkdir -p -m 0755 /run/sshd\n"
            f"mkdir -m 0700 {home} && chown {user.uid}:{user.gid} {home}\n"
        )

    def leftovers(self) -> list[Path]:
        return [*super().leftovers(), self.root]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)
