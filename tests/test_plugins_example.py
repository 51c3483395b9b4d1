"""The example plug-in of docs/plugins.md, installed through its entry point, works as a mode.

The example's code and entry-point declaration are taken from the markdown and written as a
real package plus a real ``*.dist-info`` (METADATA and entry_points.txt) in a directory put on
``PYTHONPATH``: importlib.metadata finds it exactly as it finds an installed wheel, without a
build, a venv or a network (``pip install`` of the same files would also need a build backend).
A broken plug-in and one claiming a built-in name sit next to it. Everything runs in
subprocesses, so this test process never sees these modes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

REPO = Path(__file__).resolve().parent.parent
PLUGINS_DOC = REPO / "docs" / "plugins.md"


def doc_block(language: str, first_line: str) -> str:
    """The fenced ``language`` block of docs/plugins.md that starts with ``first_line``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", PLUGINS_DOC.read_text(encoding="utf-8"),
                        flags=re.MULTILINE | re.DOTALL)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"{PLUGINS_DOC}: no single ```{language} block starting {first_line!r}"
    return str(found[0])


def install(site: Path, dist: str, version: str, module: str, code: str,
            entry_points: dict[str, str]) -> None:
    """``module`` as a distribution ``dist`` would install it, with its entry points."""
    (site / f"{module}.py").write_text(code, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[remotemap.backends]\n{lines}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    declared = tomllib.loads(doc_block("toml", '[project.entry-points."remotemap.backends"]'))
    entry_points = declared["project"]["entry-points"]["remotemap.backends"]
    assert entry_points == {"threads": "remotemap_threads:ThreadsBackend"}
    code = doc_block("python", '"""A remotemap mode that runs tasks on a pool of threads')
    install(site, "remotemap-threads", "1.0", "remotemap_threads", code, entry_points)
    # A plug-in that claims a built-in name: ignored, with a warning naming it.
    install(site, "remotemap-shadow", "0.2", "remotemap_shadow", "",
            {"local": "remotemap_shadow:Shadow"})
    install(site, "remotemap-broken", "0.1", "remotemap_broken",
            "raise RuntimeError('this plug-in is broken on purpose')\n",
            {"broken": "remotemap_broken:BrokenBackend"})
    return site


def run(site: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
           "REMOTEMAP_CONFIG": str(config)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=config.parent, timeout=300, check=False)


BROKEN = ("entry point 'broken = remotemap_broken:BrokenBackend' (group remotemap.backends) "
          "of distribution 'remotemap-broken 0.1'")

_CALLER = textwrap.dedent("""
    import json, threading, time, warnings
    from remotemap import RemoteException, remote_map
    from remotemap.backends import backend_names, get_backend_class

    def square_where(x):
        time.sleep(0.05)  # long enough for the pool to start every thread it may
        return x * x, threading.current_thread().name

    def fail_on_4(x):
        if x == 4:
            raise ValueError(f"task got {x}")
        return x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = {"names": backend_names()}
    out["warnings"] = [str(w.message) for w in caught]
    out["local"] = get_backend_class("local").__name__
    values = remote_map(square_where, [(i,) for i in range(20)], mode="threads", progress=False)
    out["squares"] = [v for v, _ in values]
    out["threads"] = sorted({name for _, name in values})
    try:
        remote_map(fail_on_4, [(i,) for i in range(8)], mode="threads", progress=False)
    except RemoteException as exc:
        failure = exc.failures[0]
        out["failed"] = [exc.failed_indices, failure.exception_type, failure.message, exc.results]
    try:
        remote_map(abs, [(1,)], mode="broken", progress=False)
    except Exception as exc:
        out["broken"] = [type(exc).__name__, str(exc)]
    out["serial"] = remote_map(abs, [(-2,)], mode="serial", progress=False)
    print(json.dumps(out))
""")


def test_the_example_plugin_runs_through_its_entry_point(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[threads]\nworkers = 3\n")
    done = run(site, config, "-c", _CALLER)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["names"][:5] == ["serial", "local", "local_with_dumps", "ssh", "cluster"]
    # dask: the mode remotemap itself declares through the same entry-point group.
    assert set(out["names"][5:]) == {"threads", "broken", "dask"}
    assert out["warnings"] == [
        "ignoring entry point 'local = remotemap_shadow:Shadow' (group remotemap.backends) of "
        "distribution 'remotemap-shadow 0.2': mode 'local' exists already (built into "
        "remotemap)"]
    assert out["local"] == "LocalBackend"
    assert out["squares"] == [i * i for i in range(20)]
    # The section's value reached the backend: three threads of the plug-in's pool.
    assert len(out["threads"]) == 3
    assert all(name.startswith("remotemap-threads") for name in out["threads"])
    assert out["failed"] == [[4], "ValueError", "task got 4", [0, 1, 2, 3, None, 5, 6, 7]]
    # The broken plug-in is named with its distribution, and breaks nothing else.
    kind, message = out["broken"]
    assert kind == "ModeLoadError"
    assert BROKEN in message and "this plug-in is broken on purpose" in message
    assert out["serial"] == [2]


def test_the_example_plugin_section_is_checked_and_shown(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[remotemap]\nmode = "threads"\n[threads]\nworkers = 3\n')
    shown = run(site, config, "-m", "remotemap", "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"^\[threads\]\nworkers = 3 +# {re.escape(str(config))}$", shown.stdout,
                     re.MULTILINE), shown.stdout
    status = run(site, config, "-m", "remotemap", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    modes = {line.split()[0]: line for line in status.stdout.splitlines()
             if line.startswith("  ") and line.split()[:1] != []}
    assert "available" in modes["threads"] and "not" not in modes["threads"]
    assert "not available" in modes["broken"] and BROKEN in modes["broken"]
    assert "available" in modes["local"] and "not" not in modes["local"]

    config.write_text("[threads]\nworker = 2\n")
    typo = run(site, config, "-m", "remotemap", "config", "validate")
    assert typo.returncode == 1
    assert (f"{config}: unknown key 'threads.worker'; valid keys in [threads]: workers "
            f"(did you mean 'workers'?)") in typo.stderr
    config.write_text("[threads]\nworkers = 0\n")
    small = run(site, config, "-m", "remotemap", "config", "validate")
    assert f"{config}: threads.workers: 0 is too small; the minimum is 1" in small.stderr
    config.write_text("[broken]\nanything = 1\n")
    broken = run(site, config, "-m", "remotemap", "config", "validate")
    assert broken.returncode == 1
    assert str(config) in broken.stderr and BROKEN in broken.stderr


def test_the_contract_suite_runs_on_the_example_plugin(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[threads]\nworkers = 2\n")
    done = run(site, config, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
               str(REPO / "tests" / "test_contract.py"), "-m", "not ssh and not slurm",
               "-k", "threads")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    assert passed >= 15, summary
