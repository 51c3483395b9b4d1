"""Real servers for the tests and benchmarks, usable without pytest.

- :mod:`tests.infra.sshd`: an OpenSSH server on loopback for a non-root test user, and a
  second host in a network namespace.

Modules are imported explicitly (``from tests.infra.sshd import SSHServer``), so one server's
helpers never cost another's import.
"""
