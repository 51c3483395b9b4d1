"""Real OpenSSH servers for tests and benchmarks (not pytest-specific): the one place to import
them from. Each part lives in the module named for it:

- :mod:`tests.infra.system`: whether this machine can run them (:func:`unavailable_reason`),
  setup commands (:func:`run`, :func:`run_as`), ending a server's process tree.
- :mod:`tests.infra.login_user`: :func:`ensure_test_user`, a non-root login user (``rmtest``);
  :func:`install_remotemap_for_user`, this checkout pip-installed into a venv of that user
  (Debian's Python), one venv per digest of the checkout.
- :mod:`tests.infra.ssh_server`: :class:`SSHServer`, ``sshd -D`` on 127.0.0.1 and a free port,
  with its own host key, a client key, a known_hosts file and an ssh client config naming it
  by an alias.
- :mod:`tests.infra.netns`: :class:`NetnsHost`, a second host: sshd inside a network namespace,
  reached through a ``ProxyCommand`` that runs netcat inside a second ("client side")
  namespace. Its docstring states THE NETWORK RULE: traffic goes only to 127.0.0.0/8 or into
  namespaces made here.
- :mod:`tests.infra.isolated_host`: :class:`IsolatedHost`, a host that shares nothing with the
  caller: a :class:`NetnsHost` whose sshd also has its own mount namespace (private /tmp,
  /home, /root, /run, /opt; the checkout hidden; a login user that exists only there) and its
  own Python (:mod:`tests.infra.host_python`: a venv with remotemap from a wheel of this
  checkout), made with :mod:`tests.infra.mounts`. Its pytest fixture is
  ``isolated_ssh_host`` (tests/isolated_fixtures.py).
"""

from __future__ import annotations

from tests.infra.login_user import (
    REPO,
    TEST_USER,
    TestUser,
    ensure_test_user,
    install_remotemap_for_user,
    pip_version_args,
)
from tests.infra.netns import NetnsHost, cleanup_stale_netns, netns_unavailable_reason
from tests.infra.ssh_server import (
    SSHServer,
    fingerprint,
    free_port,
    generate_key,
    known_hosts_line,
)
from tests.infra.system import (
    SYSTEM_PYTHON,
    CommandFailed,
    InfraUnavailable,
    descendants,
    kill_tree,
    run,
    run_as,
    unavailable_reason,
)

__all__ = [
    "REPO",
    "SYSTEM_PYTHON",
    "TEST_USER",
    "CommandFailed",
    "InfraUnavailable",
    "NetnsHost",
    "SSHServer",
    "TestUser",
    "cleanup_stale_netns",
    "descendants",
    "ensure_test_user",
    "fingerprint",
    "free_port",
    "generate_key",
    "install_remotemap_for_user",
    "kill_tree",
    "known_hosts_line",
    "netns_unavailable_reason",
    "pip_version_args",
    "run",
    "run_as",
    "unavailable_reason",
]
