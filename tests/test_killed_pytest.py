"""A killed pytest leaves no server running. `kill PID` (a CI timeout, a user): tests/conftest.py
turns SIGTERM into the KeyboardInterrupt pytest tears its fixtures down on. SIGKILL: the next
start of the same kind of server reaps what the dead owner left (tests/infra/owned.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.infra.owned import OWNER_FILE, reap_stale
from tests.infra.slurm import SLURM_DIR_PREFIX, SingleNodeSlurm
from tests.infra.ssh_server import SSHD_DIR_PREFIX, SSHServer
from tests.infra.system import process_running

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.ssh  # every test here but the fork one starts or needs an sshd


def _wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            held: dict[str, object] = json.loads(path.read_text())
            return held
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    out = proc.communicate()[0].decode(errors="replace")
    pytest.fail(f"the inner pytest never held its sshd:\n{out[-3000:]}")


def test_sigterm_on_pytest_stops_the_sshd_it_started(tmp_path: Path,
                                                     sshd_host: object) -> None:
    # sshd_host: the outer session proves sshd can run here (or skips saying why) before the
    # inner one starts its own.
    out = tmp_path / "held.json"
    env = {**os.environ, "REMOTEMAP_PROBE_OUT": str(out)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/sigterm_probe.py"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    held = _wait_for(out, proc, 60)
    pid, workdir = held["pid"], Path(str(held["workdir"]))
    assert isinstance(pid, int) and process_running(pid)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    survived = process_running(pid)
    if survived:  # stop what the failure leaves, then report it
        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "tearing down" in output
    assert not survived, f"sshd {pid} outlived the pytest that started it"
    assert not workdir.exists(), f"{workdir} outlived the pytest that made it"


def test_a_child_forked_from_pytest_still_ends_on_sigterm() -> None:
    # The local modes fork their first chunk from the caller (here, pytest): whoever sends
    # that child SIGTERM expects it to end, not to unwind as an interrupt.
    child = os.fork()
    if child == 0:
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    time.sleep(0.2)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


_HOLD_AN_SSHD = """
import json, sys, time
from tests.infra.login_user import ensure_test_user
from tests.infra.ssh_server import SSHServer
server = SSHServer(ensure_test_user()).start()
print(json.dumps({"pid": server.pid, "workdir": str(server.workdir)}), flush=True)
time.sleep(120)
"""


def test_an_sshd_left_by_a_sigkilled_owner_is_reaped_at_the_next_start(
        sshd_host: SSHServer) -> None:
    owner = subprocess.Popen([sys.executable, "-c", _HOLD_AN_SSHD], cwd=ROOT,
                             stdout=subprocess.PIPE)
    assert owner.stdout is not None
    held = json.loads(owner.stdout.readline() or "{}")
    owner.kill()
    owner.wait()
    pid, workdir = held["pid"], Path(held["workdir"])
    try:
        assert process_running(pid), "SIGKILL on its owner should leave this sshd running"
        reaped = reap_stale(workdir.parent, SSHD_DIR_PREFIX)
        assert workdir in reaped
        assert not process_running(pid) and not workdir.exists()
        # The session's own sshd has a live owner (this process): untouched.
        assert sshd_host.workdir not in reaped and sshd_host.workdir.exists()
        assert sshd_host.pid is not None and process_running(sshd_host.pid)
    finally:
        if process_running(pid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slurm
def test_the_private_slurm_records_its_owner(slurm_cluster: SingleNodeSlurm) -> None:
    # It is reaped by the same code as the sshd above, found by this prefix and owner file.
    assert slurm_cluster.state_dir.name.startswith(SLURM_DIR_PREFIX)
    owner = json.loads((slurm_cluster.state_dir / OWNER_FILE).read_text())
    assert owner["pid"] == os.getpid()
