"""The progress display in a real Jupyter kernel: a widget with ipywidgets, text without it.

The kernel is started with jupyter_client, as a notebook server starts one, and the cell's
output is read from its messages as a notebook front end reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

WIDGET = "application/vnd.jupyter.widget-view+json"
RUN = """
from remotemap import remote_map
print(remote_map(abs, [(-i,) for i in range(5)], mode="serial"))
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("jupyter")
    with pytest.MonkeyPatch.context() as env:
        # Its files (connection file, IPython profile) go to a private place, not ~.
        env.setenv("JUPYTER_RUNTIME_DIR", str(home / "runtime"))
        env.setenv("JUPYTER_DATA_DIR", str(home / "data"))
        env.setenv("IPYTHONDIR", str(home / "ipython"))
        env.setenv("JUPYTER_PLATFORM_DIRS", "1")
        env.setenv("XDG_CONFIG_HOME", str(home / "config"))
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(cwd=str(home))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(client: Any, code: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Run ``code``; what it wrote on each stream, and the data of what it displayed."""
    msg_id = client.execute(code)
    streams: dict[str, str] = {"stdout": "", "stderr": ""}
    displays: list[dict[str, Any]] = []
    while True:
        msg = client.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            streams[content["name"]] += content["text"]
        elif kind == "display_data":
            displays.append(content["data"])
        elif kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return streams, displays


SUMMARY = r"remotemap serial: 5 tasks in \d+\.\d s, 0 failed\n"


def test_without_ipywidgets_a_text_bar_and_no_warning(kernel: Any) -> None:
    # As if ipywidgets were not installed: an import of it fails, find_spec finds nothing.
    streams, displays = run_cell(kernel, 'import sys; sys.modules["ipywidgets"] = None\n' + RUN)
    assert streams["stdout"] == "[0, 1, 2, 3, 4]\n"
    assert "0/5" in streams["stderr"]  # shown by default: a kernel is someone watching
    assert re.search(r"\r" + SUMMARY + r"\Z", streams["stderr"]), streams["stderr"]
    assert "Warning" not in streams["stderr"] and "IProgress" not in streams["stderr"]
    assert displays == []


def test_with_ipywidgets_a_widget_then_the_summary(kernel: Any) -> None:
    streams, displays = run_cell(kernel, 'import sys; sys.modules.pop("ipywidgets", None)\n'
                                 + RUN)
    assert any(WIDGET in data for data in displays), displays
    assert streams["stdout"] == "[0, 1, 2, 3, 4]\n"
    assert re.fullmatch(SUMMARY, streams["stderr"]), streams["stderr"]
