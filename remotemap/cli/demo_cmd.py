"""``remotemap demo``: a small real run, to see that remote_map works here and how fast."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from remotemap.backends import backend_names
from remotemap.config import load_config
from remotemap.errors import BackendUnavailable, RemoteException


def square(x: int) -> int:
    """The demo's task. Module-level, so every mode can ship it to workers by reference."""
    return x * x


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _preview(values: list[Any], shown: int = 6) -> str:
    head = ", ".join(str(v) for v in values[:shown])
    return f"[{head}, ..., {values[-1]}]" if len(values) > shown + 1 else f"[{head}]"


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: remote_map pulls in joblib, which `remotemap --help` should not pay for.
    from remotemap.api import remote_map

    config = load_config(args.config)
    mode = args.mode or config.get("remotemap.mode")
    origin = "--mode" if args.mode else config.origin("remotemap.mode")
    print(f"mode: {mode}  (from {origin})")
    n = args.tasks
    start = time.perf_counter()
    try:
        results = remote_map(
            square, [(i,) for i in range(n)], mode=mode, config=config, progress=False
        )
    except (BackendUnavailable, RemoteException) as exc:
        # Expected ways for a demo to fail (mode not usable here, workers dying): report them
        # like any other failure rather than with a traceback.
        print(f"remotemap: error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    expected = [square(i) for i in range(n)]
    print(f"squares of 0..{n - 1}: {_preview(results)}  (sum {sum(results)})")
    print(f"elapsed: {elapsed:.2f} s for {n} tasks")
    if results != expected:
        print("remotemap: error: the results are wrong", file=sys.stderr)
        return 1
    print("ok")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="run a small remote_map to check that it works here",
        description="Compute the squares of 0..N-1 with remote_map on the default mode (or "
        "--mode) and print the results and the time it took. Exit status 1 when the mode "
        "cannot run here or the results are wrong.",
    )
    parser.add_argument(
        "-n",
        "--tasks",
        type=_positive,
        default=20,
        metavar="N",
        help="number of tasks (default: 20)",
    )
    parser.add_argument(
        "--mode",
        choices=backend_names(),
        help="mode to run on (default: [remotemap] mode from the config)",
    )
    parser.set_defaults(handler=cmd_demo)
