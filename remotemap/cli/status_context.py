"""What the blocks of ``remotemap status`` are given: :class:`StatusContext`, gathered once by
the command (``status_cmd``) and handed to each block (``ssh_status``, ``workflow_status``, the
cluster block). Kept apart so the blocks need not import the command that assembles them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from remotemap.config import Config
from remotemap.errors import ConfigError


@dataclass
class StatusContext:
    """What every report block may look at, gathered once."""

    args: argparse.Namespace
    path: Path
    source: str
    #: The loaded config, or the defaults when the file could not be used (see ``error``),
    #: so later blocks still report something useful.
    config: Config
    error: ConfigError | None
    out: TextIO

    def line(self, text: str = "") -> None:
        print(text, file=self.out)


#: A block prints its part of the report and returns False when it found a problem.
ReportBlock = Callable[[StatusContext], bool]
