"""The isolated test host's own Python: a venv at :data:`HOST_PYTHON_DIR` (a path only that
host has) with remotemap installed from a wheel built from the checkout, not from its path.

:func:`host_python_dir` builds the wheel (in a copy of the sources, so the checkout gets no
build/ or egg-info), and reuses a venv made earlier for a wheel of the same contents and the
same versions; else it makes one in a short-lived mount namespace where the cache directory is
bound at :data:`HOST_PYTHON_DIR`, so the venv's own paths (pyvenv.cfg, ``sys.prefix``) are the
host's. The caller binds the returned directory at the same place inside the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tests.infra.login_user import REPO, pip_version_args
from tests.infra.mounts import mount_script
from tests.infra.system import SYSTEM_PYTHON, run

#: Where the host's venv is, inside the host (and nowhere on the caller's side).
HOST_PYTHON_DIR = Path("/opt/remotemap-host")
#: Beyond remotemap's own dependencies: what the fMRI example's steps import (the versions
#: this process has, from constraints.txt: a numpy array pickled by numpy 2 needs numpy 2),
#: and what the cluster mode's engine needs on a submitting host (the cluster extra's).
HOST_EXTRAS = ("numpy", "nibabel", "soma-workflow", "psutil")
#: The venvs, one per digest, kept across test sessions.
CACHE_DIR = Path(os.environ.get("REMOTEMAP_TEST_CACHE")
                 or Path.home() / ".cache" / "remotemap-tests") / "isolated-host"  # fmt: skip
#: A cached venv unused this long is removed when another is made.
_UNUSED = 6 * 3600


_WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "CHANGELOG.md")


def _source_files(checkout: Path) -> list[Path]:
    files = [checkout / name for name in _WHEEL_SOURCES if (checkout / name).exists()]
    package = (p for p in (checkout / "remotemap").rglob("*") if p.is_file())
    return files + sorted(p for p in package if "__pycache__" not in p.parts)


def build_wheel(checkout: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of ``checkout``'s package, copied into ``out``. The
    wheel is kept by a digest of the sources (a build takes seconds to half a minute)."""
    digest = hashlib.sha256()
    for path in _source_files(checkout):
        digest.update(str(path.relative_to(checkout)).encode() + b"\0" + path.read_bytes())
    kept = CACHE_DIR / "wheels" / digest.hexdigest()[:16]
    if not any(kept.glob("remotemap-*.whl")):
        source = Path(tempfile.mkdtemp(prefix="remotemap-wheel-src-"))
        try:
            for path in _source_files(checkout):
                (source / path.relative_to(checkout)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, source / path.relative_to(checkout))
            run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-input",
                 "--wheel-dir", str(source / "dist"), str(source)],
                timeout=300, env=_clean_env(), cwd=source)  # fmt: skip
            # Renamed into place whole: a session building the same wheel at once keeps its own.
            shutil.copytree(source / "dist", source / "kept")
            kept.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                (source / "kept").rename(kept)
        finally:
            shutil.rmtree(source, ignore_errors=True)
    kept.touch()  # in use: keep it from being pruned
    (wheel,) = kept.glob("remotemap-*.whl")
    out.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(wheel, out))


def wheel_digest(wheel: Path, constraints: Path | None) -> str:
    """A digest of what the venv would hold: the wheel's members (not the zip's timestamps),
    the pinned versions and the host's Python (the machine's, whose venv it is)."""
    version = run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version)"])
    digest = hashlib.sha256(f"{SYSTEM_PYTHON} {version}".encode() + b"\0")
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name) + b"\0")
    digest.update(constraints.read_bytes() if constraints else b"newest")
    digest.update(" ".join(HOST_EXTRAS).encode())
    return digest.hexdigest()


def host_python_dir(checkout: Path = REPO) -> Path:
    """The caller-side directory of a venv for :data:`HOST_PYTHON_DIR` with ``checkout``'s wheel
    installed, made if no cached one matches (seconds with pip's cache)."""
    work = Path(tempfile.mkdtemp(prefix="remotemap-host-python-"))
    try:
        dist = work / "dist"
        wheel = build_wheel(checkout, dist)
        pins = pip_version_args(dist)
        digest = wheel_digest(wheel, dist / "constraints.txt" if "-c" in pins else None)
        venv = CACHE_DIR / digest[:16]
        # A lock of its own: the machine's is held for minutes by other sessions' installs.
        with _cache_lock():
            if (venv / ".installed").exists():
                (venv / ".installed").touch()  # in use: keep it from being pruned
                return venv
            shutil.rmtree(venv, ignore_errors=True)  # a build that was cut short
            venv.mkdir(mode=0o755, parents=True)
            shutil.copytree(dist, venv / "dist")
            _make_venv(venv, pins)
            (venv / ".installed").write_text(digest)
            _prune(keep=venv)
        return venv
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One venv build at a time across test processes."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _make_venv(venv: Path, pins: list[str]) -> None:
    """In a mount namespace where ``venv`` is at HOST_PYTHON_DIR: a venv there (without pip:
    this interpreter's pip installs into it), the wheel and its dependencies."""
    shown = [(venv, HOST_PYTHON_DIR)]
    opt = HOST_PYTHON_DIR.parent
    # The host path may not exist here: a tmpfs over its parent, the parent's entries kept
    # (pip's configured wheel directories may live there).
    shown += [(entry, entry) for entry in sorted(opt.iterdir())] if opt.is_dir() else []
    dist = HOST_PYTHON_DIR / "dist"
    wheel = next((venv / "dist").glob("remotemap-*.whl")).name
    pins = [str(dist / "constraints.txt") if p.endswith("constraints.txt") else p for p in pins]
    python = HOST_PYTHON_DIR / "bin" / "python"
    commands = [
        [SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(HOST_PYTHON_DIR)],
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-input", *pins, str(dist / wheel), *HOST_EXTRAS],
        # -I: without the environment and the current directory, as the host will run it.
        [str(python), "-I", "-c", f"import remotemap; assert remotemap.__file__.startswith("
         f"{str(HOST_PYTHON_DIR / 'lib')!r}), remotemap.__file__"],
    ]  # fmt: skip
    script = mount_script([opt], shown) + "\n".join(map(shlex.join, commands))
    started = time.monotonic()
    run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
        timeout=600, env=_clean_env(), cwd="/")  # fmt: skip
    (venv / ".build-seconds").write_text(f"{time.monotonic() - started:.1f}\n")


def _clean_env() -> dict[str, str]:
    """This environment without its Python settings: with the checkout on PYTHONPATH, pip
    would find remotemap "already installed" and skip the wheel."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "PIP_PREFIX")}


def _prune(keep: Path) -> None:
    for wheels in (CACHE_DIR / "wheels").iterdir():
        if time.time() - wheels.stat().st_mtime >= _UNUSED:
            shutil.rmtree(wheels, ignore_errors=True)
    for venv in CACHE_DIR.iterdir():
        if venv.name in ("wheels", ".lock"):
            continue
        stamp = venv / ".installed"
        unused = time.time() - stamp.stat().st_mtime if stamp.exists() else _UNUSED
        if venv != keep and unused >= _UNUSED:
            shutil.rmtree(venv, ignore_errors=True)
