"""``logging.getLogger("remotemap").setLevel(logging.DEBUG)``, as docs/quickstart.md shows it,
prints remotemap's records; once the application configures logging they go to its handlers
only, never twice. Each case runs in a fresh interpreter: pytest's own handlers would count
as the application's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

RUN = "remotemap.remote_map(abs, [(-1,)], mode='serial', progress=False)\n"
STARTED = "remote_map: 1 tasks on serial"


def _stderr(setup: str) -> str:
    code = "import logging, remotemap\n" + textwrap.dedent(setup) + RUN
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stderr


def test_the_documented_line_prints_debug_records() -> None:
    err = _stderr("logging.getLogger('remotemap').setLevel(logging.DEBUG)\n")
    assert err.count(STARTED) == 2  # "... on serial" and "... on serial in 0.0 s, 0 failed"
    assert "remotemap: DEBUG: " in err


def test_nothing_below_the_level_asked_for() -> None:
    assert _stderr("") == ""
    assert _stderr("logging.getLogger('remotemap').setLevel(logging.INFO)\n") == ""


def test_warnings_still_print_without_any_configuration() -> None:
    err = _stderr("logging.getLogger('remotemap.ssh').warning('host x is gone')\n")
    assert err.count("host x is gone") == 1


def test_an_application_handler_gets_each_record_once() -> None:
    err = _stderr("logging.basicConfig(level=logging.DEBUG, format='APP %(message)s')\n")
    assert err.count(STARTED) == 2 and err.count("APP " + STARTED) == 2
    assert "remotemap: DEBUG" not in err


def test_a_handler_on_remotemaps_logger_takes_over() -> None:
    err = _stderr("""
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter('MINE %(message)s'))
        logger = logging.getLogger('remotemap')
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    """)
    assert err.count(STARTED) == 2 and err.count("MINE " + STARTED) == 2
