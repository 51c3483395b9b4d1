"""``remotemap runs plot RUN -o run.html|run.png``: a picture of a stored run.

The page comes from :mod:`remotemap.timeline`. A PNG is a screenshot of that same page by
headless Chromium: the picture is then exactly the HTML one, and remotemap needs no plotting
library (matplotlib would be a dependency of its own for one command).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from remotemap.errors import RemotemapError, TamperedFile, UnsafePath
from remotemap.timeline import run_results, timeline_html

#: The names Chromium's program goes by, first found wins.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class NoRenderer(RemotemapError, RuntimeError):
    """No headless browser to draw a PNG with."""


def find_chromium() -> str:
    """The path of Chromium's program; NoRenderer naming what to install when none is on
    PATH."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise NoRenderer("writing a PNG needs headless Chromium, and none of "
                     f"{', '.join(CHROMIUM_NAMES)} is on PATH: install it (Debian/Ubuntu: "
                     "`apt-get install chromium`), or write .html instead")


def chromium_command(chromium: str, profile: str) -> list[str]:
    """Headless Chromium with a throw-away profile; without its sandbox as root, where
    Chromium refuses to start with it (the page has no script and fetches nothing)."""
    command = [chromium, "--headless", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", f"--user-data-dir={profile}"]
    return command + (["--no-sandbox"] if os.geteuid() == 0 else [])


def screenshot(page: str, png: Path, timeout: float = 120.0) -> None:
    """Draw the HTML text ``page`` to ``png`` with headless Chromium, sized to its SVG."""
    chromium = find_chromium()
    sizes = re.search(r'<svg [^>]*width="(\d+)" height="(\d+)"', page)
    width, height = (int(sizes[1]) + 20, int(sizes[2]) + 70) if sizes else (1280, 800)
    with tempfile.TemporaryDirectory(prefix="remotemap-plot-") as tmp:
        source = Path(tmp, "run.html")
        source.write_text(page, encoding="utf-8")
        command = [*chromium_command(chromium, str(Path(tmp, "profile"))),
                   f"--window-size={width},{height}", f"--screenshot={png.absolute()}",
                   source.as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    if done.returncode != 0 or not png.is_file():
        raise NoRenderer(f"{chromium} could not draw {png} (exit status {done.returncode}): "
                         f"{done.stderr.strip()[-500:]}")


def write_picture(page: str, output: Path) -> None:
    """``page`` to ``output``: as is for .html/.htm, a screenshot for .png."""
    suffix = output.suffix.lower()
    if suffix in (".html", ".htm"):
        output.write_text(page, encoding="utf-8")
    elif suffix == ".png":
        screenshot(page, output)
    else:
        raise ValueError(f"{output}: the picture is written as .html or .png, not "
                         f"{suffix or 'a file without a suffix'}")


def cmd_plot(args: argparse.Namespace) -> int:
    from remotemap.run_index import load_run

    try:  # found as every `runs` command finds a run: by id, unique prefix or directory
        run = load_run(args.run)
        if run.kind != "run_dir":
            raise ValueError(f"{run.id} is a {run.kind} run: `remotemap runs plot` draws the "
                             "runs of remote_map(..., run_dir=...) only, whose outcomes keep "
                             "each task's times")
        results = run_results(run.summary.location)
    except (ValueError, UnsafePath, TamperedFile) as exc:
        print(f"remotemap: error: {exc}", file=sys.stderr)
        return 1
    output = Path(args.output or f"{run.id}.html")
    try:
        write_picture(timeline_html(results, title=f"remotemap run {run.id}"), output)
    except (ValueError, NoRenderer, OSError, subprocess.TimeoutExpired) as exc:
        print(f"remotemap: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {output}")
    return 0


def register_runs(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``plot`` to the subcommands of ``remotemap runs``."""
    plot = subparsers.add_parser(
        "plot", parents=[common], help="draw a stored run: each task a bar on its worker",
        description="Draw every task attempt of a stored run as a bar on the lane of the "
        "worker that ran it, over time: failures red, timeouts hatched, retries outlined, "
        "chunks shaded. Writes a self-contained HTML page (no script, nothing fetched) or, "
        "with -o FILE.png, a screenshot of it by headless Chromium. Exit status 1 when the "
        "run cannot be read or the picture cannot be written.")
    plot.add_argument("run", metavar="RUN", help="run id (see `remotemap runs`) or directory")
    plot.add_argument("-o", "--output", metavar="FILE",
                      help="where to write: FILE.html or FILE.png (default: RUN.html here)")
    plot.set_defaults(handler=cmd_plot)
