"""Concurrent ``remotemap config set/unset``: every change lands, none tears the file.

The writers are real ``remotemap`` processes started together against one config file; the
lock holder in the timeout tests is a real process too, so the pid in the message is not ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import tomlkit

from remotemap.config import load_config
from remotemap.config.editing import atomic_write
from remotemap.config.lock import lock_path, locked
from remotemap.errors import ConfigError

#: Ten distinct keys and a valid value for each: one writer process per key.
TEN = [
    ("local.n_jobs", "3"),
    ("local.chunksize", "4"),
    ("local_with_dumps.temp_dir", "/scratch/me"),
    ("ssh.user", "alice"),
    ("ssh.port", "2222"),
    ("ssh.n_jobs", "2"),
    ("ssh.python", "python3.11"),
    ("cluster.queue", "short"),
    ("cluster.memory", "4G"),
    ("cluster.cpus_per_task", "6"),
]

HEADER = "# my remotemap settings\n# do not lose this comment\n"


def _env(config: Path) -> dict[str, str]:
    return {**os.environ, "REMOTEMAP_CONFIG": str(config)}


def _run_at_once(config: Path, commands: list[list[str]]) -> None:
    """Start every ``remotemap`` command before waiting for any; all must succeed."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "remotemap", *args],
            env=_env(config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    for args, proc in zip(commands, procs, strict=True):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (args, err)


def test_ten_concurrent_sets_all_persist_and_keep_comments(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(HEADER + "[local]\n# workers\nn_jobs = 1\n", encoding="utf-8")
    config.chmod(0o640)
    _run_at_once(config, [["config", "set", key, value] for key, value in TEN])
    loaded = load_config(config)
    missing = [key for key, value in TEN if str(loaded.get(key)) != value]
    assert not missing, f"lost writes: {missing}\n{config.read_text()}"
    text = config.read_text(encoding="utf-8")
    assert text.startswith(HEADER)
    assert "# workers\n" in text
    assert (config.stat().st_mode & 0o777) == 0o640  # the file's own mode, kept
    assert (lock_path(config).stat().st_mode & 0o777) == 0o600
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["config.toml", "config.toml.lock"]  # no temp file left behind


def test_ten_concurrent_unsets_all_persist(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    # The ten keys, written here: setting them one remotemap process after another cost ~5 s,
    # and the sets' own test is test_ten_concurrent_sets_all_persist_and_keep_comments.
    sections: dict[str, dict[str, str | int]] = {}
    for key, value in TEN:
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = int(value) if value.isdigit() else value
    config.write_text(HEADER + tomlkit.dumps(sections), encoding="utf-8")
    assert all(str(load_config(config).get(key)) == value for key, value in TEN)
    _run_at_once(config, [["config", "unset", key] for key, _ in TEN])
    loaded = load_config(config)
    still_set = [key for key, _ in TEN if loaded.origin(key) != "default"]
    assert not still_set, f"unsets lost: {still_set}\n{config.read_text()}"
    assert config.read_text(encoding="utf-8").startswith(HEADER)


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """While the file is rewritten over and over, every read is one whole version."""
    config = tmp_path / "config.toml"
    versions = [HEADER + f"[local]\nn_jobs = {i}\n" + "# padding\n" * 2000 for i in range(50)]
    atomic_write(config, versions[0])
    seen: list[str] = []
    done = threading.Event()

    def read_loop() -> None:
        while not done.is_set():
            seen.append(config.read_text(encoding="utf-8"))

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for text in versions[1:]:
            atomic_write(config, text)
    finally:
        done.set()
        reader.join()
    assert seen
    assert not [text for text in seen if text not in versions]


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from remotemap.config.lock import locked
    with locked(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _hold(config: Path, seconds: float) -> subprocess.Popen[str]:
    """A separate process holding the config's lock for ``seconds``, once it says so."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(config), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_held_lock_times_out_naming_the_lock_file_and_holder(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    holder = _hold(config, 30)
    try:
        start = time.monotonic()
        with pytest.raises(ConfigError) as info, locked(config, timeout=0.5):
            pass
        waited = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
    assert 0.5 <= waited < 5
    message = str(info.value)
    assert str(lock_path(config)) in message
    assert f"process {holder.pid}" in message
    assert info.value.path == lock_path(config)
    # The holder died: the kernel dropped its lock, so the next writer gets in at once.
    with locked(config, timeout=0.5):
        pass


def test_cli_waits_for_a_short_lock_then_writes(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(HEADER, encoding="utf-8")
    holder = _hold(config, 1.5)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "remotemap", "config", "set", "local.n_jobs", "7"],
        env=_env(config), capture_output=True, text=True, timeout=60,
    )
    holder.wait()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start >= 1.0  # it waited for the holder rather than racing it
    assert load_config(config).get("local.n_jobs") == 7
