"""The non-root login user the ssh tests reach (``rmtest``), and this checkout installed for it.

- :func:`ensure_test_user`: the user, created if missing.
- :func:`install_remotemap_for_user`: this checkout, pip-installed into a venv of that user
  (Debian's Python), one venv per digest of the checkout and of the versions chosen.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.infra.system import (
    SYSTEM_PYTHON,
    InfraUnavailable,
    machine_lock,
    run,
    run_as,
    unavailable_reason,
)

REPO = Path(__file__).resolve().parents[2]
TEST_USER = "rmtest"
#: Installed beside remotemap for the test user (versions from the constraints, as the rest):
#: what the joblib backend's tests run there (joblib's batches, scikit-learn's fits), what the
#: fMRI example's steps import (nibabel; numpy comes with scikit-learn), and what the cluster
#: mode's engine needs when that user is a submitting host (the cluster extra's). One pip run
#: for all: the cluster tests' own second run cost ~12 s a session, the fMRI test's a few.
REMOTE_EXTRAS = ("joblib", "scikit-learn", "nibabel", "soma-workflow", "psutil")


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
    with machine_lock():
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
    digest.update(" ".join(REMOTE_EXTRAS).encode() + b"\0")
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
    with machine_lock():
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
        pip += ["--disable-pip-version-check", *pip_version_args(source), str(source),
                *REMOTE_EXTRAS]
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
