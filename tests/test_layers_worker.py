"""The worker and the cluster engine stay fenced: a remote host runs them with no more than the
standard library, cloudpickle and remotemap's lower modules; ``import remotemap`` is lazy."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import remotemap

#: The upper layers neither program may load (prefix match: "remotemap.workflow" covers its
#: submodules).
FORBIDDEN = ("remotemap.api", "remotemap.workflow", "remotemap.config", "remotemap.cli",
             "remotemap.executor", "remotemap.driver")

#: Everything of remotemap each program really loads: a new import shows up here for review.
WORKER_MODULES = {"remotemap", "remotemap._version", "remotemap.capture", "remotemap.chunk_packs",
                  "remotemap.errors",
                  "remotemap.execution",
                  "remotemap.integrity", "remotemap.leftovers", "remotemap.outofband",
                  "remotemap.preload",
                  "remotemap.protocol",
                  "remotemap.rundir", "remotemap.tasks", "remotemap.worker",
                  "remotemap.worker_children", "remotemap.worker_stdin",
                  "remotemap.worker_run"}
ENGINE_MODULES = {"remotemap", "remotemap._version", "remotemap.errors", "remotemap.backends",
                  "remotemap.backends.cluster", "remotemap.backends.cluster.checks",
                  "remotemap.backends.cluster.layout", "remotemap.backends.cluster.engine",
                  "remotemap.backends.cluster_engine"}

# Runs in a fresh interpreter: imports or runs (as ``-m`` does, through runpy) one module, then
# writes what it loaded beyond what the bare interpreter had (site, .pth hooks) to a file.
_PROBE = textwrap.dedent("""
    import json, runpy, sys
    before = set(sys.modules)
    how, module, out = sys.argv[1:4]
    code = None
    try:
        if how == "import":
            __import__(module)
        else:
            sys.argv = [module]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    loaded = sorted(set(sys.modules) - before)
    with open(out, "w") as f:
        json.dump({"code": code, "loaded": loaded}, f)
""")


def _probe(how: str, module: str, tmp_path: Path) -> tuple[object, list[str]]:
    out = tmp_path / "loaded.json"
    subprocess.run([sys.executable, "-c", _PROBE, how, module, str(out)], check=True,
                   capture_output=True, timeout=60)
    found = json.loads(out.read_text())
    return found["code"], found["loaded"]


def _upper(names: list[str]) -> list[str]:
    return [n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]


@pytest.mark.parametrize("how", ["import", "run"])
@pytest.mark.parametrize(("module", "allowed"), [
    ("remotemap.worker", WORKER_MODULES),
    ("remotemap.backends.cluster_engine", ENGINE_MODULES),
])
def test_program_loads_only_lower_modules(how: str, module: str, allowed: set[str],
                                          tmp_path: Path) -> None:
    code, loaded = _probe(how, module, tmp_path)
    if how == "run":
        assert code == 2  # no arguments: usage, not a crash
    assert _upper(loaded) == []
    ours = {n for n in loaded if n.split(".")[0] == "remotemap"}
    if how == "run":  # runpy runs the module as __main__, without importing it by its name
        allowed = allowed - {module}
    assert ours == allowed
    others = _third_party(loaded) - {"remotemap"}
    assert others <= _cloudpickle_and_its_needs(), \
        f"{module} needs third-party modules: {sorted(others)}"


def _third_party(names: list[str]) -> set[str]:
    return {n.split(".")[0] for n in names} - set(sys.stdlib_module_names)


@functools.cache
def _cloudpickle_and_its_needs() -> set[str]:
    """cloudpickle and what it imports itself (cloudpickle 2.2 takes typing_extensions when
    it is installed): the worker's one third-party dependency, whatever it brings."""
    script = "import json, sys, cloudpickle; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                          text=True, timeout=60)
    return _third_party(json.loads(done.stdout))


@pytest.mark.parametrize("module", ["remotemap.worker", "remotemap.backends.cluster_engine"])
def test_dash_m_without_arguments_prints_usage_and_loads_no_upper_layer(module: str) -> None:
    """The real ``python -m`` path; ``-X importtime`` names every module it imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"usage: python -m {module}" in proc.stderr
    imported = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line]
    assert {"remotemap", "remotemap.errors"} <= set(imported)  # the parsing found them
    assert _upper(imported) == []


def test_import_remotemap_loads_api_only_when_a_name_is_touched() -> None:
    code = textwrap.dedent("""
        import sys
        import remotemap
        assert remotemap.__version__
        print(sorted(n for n in sys.modules if n.startswith("remotemap")))
        remotemap.remote_map
        print("remotemap.api" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60).stdout.splitlines()
    assert out == ["['remotemap', 'remotemap._version']", "True"]


def test_every_public_name_resolves_and_star_import_works() -> None:
    from remotemap import api, errors, executor, workflow

    assert set(remotemap._LAZY) == set(remotemap.__all__) - {"__version__"}
    for name in remotemap.__all__:
        assert getattr(remotemap, name) is not None, name
    assert remotemap.remote_map is api.remote_map
    assert remotemap.TaskFailure is errors.TaskFailure
    assert remotemap.Executor is executor.Executor
    assert remotemap.Workflow is workflow.Workflow
    namespace: dict[str, object] = {}
    exec("from remotemap import *", namespace)
    assert set(remotemap.__all__) <= set(namespace)
    assert set(remotemap.__all__) <= set(dir(remotemap))


def test_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        remotemap.no_such_name  # type: ignore[attr-defined]  # noqa: B018


#: What a cluster job running one workflow step loads to unpickle ``call_step``: the step
#: runner and the graph it resolves prerequisites with, nothing that runs workflows.
STEP_JOB_MODULES = {"remotemap", "remotemap._version", "remotemap.capture",
                    "remotemap.errors", "remotemap.execution",
                    "remotemap.integrity", "remotemap.outofband", "remotemap.protocol",
                    "remotemap.rundir",
                    "remotemap.tasks", "remotemap.workflow", "remotemap.workflow.graph",
                    "remotemap.workflow.remote_step"}


def test_a_workflow_step_job_loads_no_runner(tmp_path: Path) -> None:
    """``remotemap.workflow`` is lazy too, so a compute node unpickling a step's function
    does not load the api, the executor, the config or the runners."""
    _, loaded = _probe("import", "remotemap.workflow.remote_step", tmp_path)
    ours = {n for n in loaded if n.split(".")[0] == "remotemap"}
    assert ours == STEP_JOB_MODULES


def test_the_lazy_workflow_names_are_its_public_names() -> None:
    import remotemap.workflow as workflow

    assert set(workflow.__all__) == set(workflow._LAZY)
    for name in workflow.__all__:
        assert getattr(workflow, name).__name__ == name
