"""Not collected by itself (no ``test_`` prefix): tests/test_sigterm_teardown.py runs it in a
pytest of its own, which it then ends with SIGTERM while this test holds a real sshd."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.infra.sshd import SSHServer


def test_hold_an_sshd_until_killed(sshd_host: SSHServer) -> None:
    held = {"pid": sshd_host.pid, "workdir": str(sshd_host.workdir)}
    Path(os.environ["REMOTEMAP_PROBE_OUT"]).write_text(json.dumps(held))
    time.sleep(120)
