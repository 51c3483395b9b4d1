"""Modes added without editing remotemap: ``remotemap.backends.register`` at run time, each
mode's own config section, and a config check that imports no backend's dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.taskfuncs as tf
from remotemap import ModeName, remote_map
from remotemap.backends import get_backend_class, register
from remotemap.backends.base import Session, TaskOptions
from remotemap.backends.serial import SerialBackend
from remotemap.config import SCHEMA, Key, Section, load_config, modes
from remotemap.errors import BackendUnavailable, ConfigError


class ScaleBackend(SerialBackend):
    """Serial, with every result multiplied by its section's ``factor``."""

    name = "scale_test"
    config_section = Section("scale_test", "test-only", (
        Key("factor", "int", 1, "what results are multiplied by", minimum=1),))

    def open(self, function: Callable[..., Any], options: TaskOptions) -> Session:
        factor = self.settings["factor"]
        return super().open(lambda *a, **k: factor * function(*a, **k), options)


SCALE_SECTION = ScaleBackend.config_section


@pytest.fixture
def registry() -> Iterator[None]:
    """Put the mode registry back as it was after the test (modes it registers go away)."""
    tables = (modes.TARGETS, modes.SECTION_TARGETS, modes.ORIGINS)
    saved = [dict(table) for table in tables]
    yield
    for table, old in zip(tables, saved, strict=True):
        table.clear()
        table.update(old)


def test_a_mode_registered_at_run_time_runs_with_its_own_section(registry: None,
                                                                 tmp_path: Path) -> None:
    register("scale_test", f"{__name__}:ScaleBackend")
    assert remote_map(tf.square, [(1,), (2,), (3,)], mode=ModeName("scale_test"), progress=False) \
        == [1, 4, 9]
    assert SCHEMA["scale_test"] is ScaleBackend.config_section
    path = tmp_path / "c.toml"
    path.write_text('[remotemap]\nmode = "scale_test"\n[scale_test]\nfactor = 10\n')
    config = load_config(path)
    assert remote_map(tf.square, [(1,), (2,)], config=config, progress=False) == [10, 40]
    # Per-call options are checked against the plug-in's section like a built-in's.
    assert remote_map(tf.square, [(2,)], mode=ModeName("scale_test"), factor=3,
                      progress=False) == [12]
    with pytest.raises(ValueError, match=r"scale_test\.factor: 0 is too small"):
        remote_map(tf.square, [(2,)], mode=ModeName("scale_test"), factor=0, progress=False)
    path.write_text("[scale_test]\nfactr = 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'scale_test.factr'.*did you mean "
                                          r"'factor'") as info:
        load_config(path)
    assert info.value.path == path


def test_a_taken_name_is_refused_unless_replaced(registry: None) -> None:
    with pytest.raises(ValueError, match=r"mode 'local' exists already \(built into "
                                         r"remotemap: remotemap.backends.local:LocalBackend\)"):
        register("local", f"{__name__}:ScaleBackend")
    register("scale_test", f"{__name__}:ScaleBackend")
    with pytest.raises(ValueError, match=r"mode 'scale_test' exists already.*replace=True"):
        register("scale_test", "remotemap.backends.serial:SerialBackend")
    assert get_backend_class("scale_test") is ScaleBackend
    register("scale_test", f"{__name__}:ScaleBackend", section="", replace=True)
    assert "scale_test" not in SCHEMA  # replaced: now declared without options


def test_a_bad_target_is_an_error_naming_it(registry: None) -> None:
    with pytest.raises(ValueError, match="'no_colon_here' is not of the form"):
        register("bad_form", "no_colon_here")
    with pytest.raises(ValueError, match="mode name 'two words'"):
        register("two words", f"{__name__}:ScaleBackend")
    assert "bad_form" not in modes.TARGETS
    # Registering imports nothing: the error comes when the mode is used, naming the target.
    register("ghost", "remotemap_no_such_module:Ghost")
    with pytest.raises(BackendUnavailable, match=r"backend of mode 'ghost' \(registered with "
                       r"remotemap.backends.register\(\)\): cannot import "
                       r"'remotemap_no_such_module' for 'remotemap_no_such_module:Ghost'") as info:
        remote_map(tf.square, [(1,)], mode=ModeName("ghost"), progress=False)
    assert isinstance(info.value, ImportError)
    register("no_attr", f"{__name__}:NoSuchClass")
    with pytest.raises(ImportError, match="has no attribute 'NoSuchClass'"):
        get_backend_class("no_attr")
    register("not_a_backend", "collections:OrderedDict")
    with pytest.raises(ImportError, match=r"collections:OrderedDict is .*not a subclass of "
                                          r"remotemap\.backends\.Backend"):
        get_backend_class("not_a_backend")
    register("wrong_name", "remotemap.backends.serial:SerialBackend", section="")
    with pytest.raises(ImportError, match="has name = 'serial'; it must be 'wrong_name'"):
        get_backend_class("wrong_name")
    # The broken ones do not stop the others, nor a config check.
    assert remote_map(tf.square, [(3,)], mode="serial", progress=False) == [9]
    assert load_config().get("remotemap.mode") == "local"


def test_a_section_from_a_light_module_and_a_wrong_one(registry: None, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[scale_test]\nfactor = 5\n")
    register("scale_test", "remotemap_not_imported_for_a_config_check:Nothing",
             section=f"{__name__}:SCALE_SECTION")
    assert load_config(path).get("scale_test.factor") == 5  # the backend was never imported
    register("scale_test", f"{__name__}:ScaleBackend",
             section="remotemap.backends.local_options:LOCAL", replace=True)
    assert "scale_test" not in SCHEMA
    with pytest.raises(ConfigError, match=r"remotemap.backends.local_options:LOCAL must be a "
                                          r"remotemap.config.Section named 'scale_test'"):
        load_config(path)


def test_builtin_sections_are_their_backends_own() -> None:
    """The registry reads each built-in section from a light module without importing the
    backend; the backend class names the same section."""
    for name in modes.BUILTIN_MODES:
        section = modes.mode_section(name)
        assert section is None or section.name == name
        declared = get_backend_class(name).config_section
        assert declared is section, name


HEAVY = ("paramiko", "soma_workflow", "loky", "joblib", "dask", "distributed")

# Runs in a fresh interpreter: checks the config file given, then runs ``remotemap`` with the
# given arguments as ``python -m remotemap`` would, and reports which heavy modules got loaded.
_PROBE = textwrap.dedent("""
    import json, runpy, sys
    import remotemap
    from remotemap.config import load_config
    load_config(sys.argv[1]).entries()
    for command in json.loads(sys.argv[2]):
        sys.argv = ["remotemap", *command]
        try:
            runpy.run_module("remotemap", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            assert exc.code in (0, None), (command, exc.code)
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
    print(json.dumps(heavy))
""")


def test_config_checks_import_no_backend_dependency(tmp_path: Path) -> None:
    from tests.test_config_docs import uncommented_example

    path = tmp_path / "every-key.toml"
    path.write_text(uncommented_example())
    commands = [["config", "validate"], ["config", "show"], ["config", "get", "ssh.hosts"],
                ["config", "path"]]
    code = f"HEAVY = {HEAVY!r}\n{_PROBE}"
    env = {**os.environ, "REMOTEMAP_CONFIG": str(path)}
    done = subprocess.run([sys.executable, "-c", code, str(path), json.dumps(commands)],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
    # The probe can see them: a real run of mode local does load loky.
    check = "import sys, remotemap; remotemap.remote_map(abs, [(-1,)], mode='local', " \
            "progress=False); print('loky' in sys.modules)"
    seen = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=120, check=True)
    assert seen.stdout.split()[-1] == "True"
