#!/usr/bin/env python3
"""Run a per-subject treatment on every subject file of a directory, on any remotemap mode.

    scripts/dispatch_subjects.py DATA_DIR --mode local --output results/ [--verify]

Each subject is split in parts, the parts are processed in parallel, merged, and the merged
result is written to --output here; subjects are independent, so one that fails (a missing or
corrupt file) does not stop the others. Each subject file is sent to the host its steps run
on (remotemap.Staged: paths are made absolute here first), so the hosts need no copy of the
data; the staged copies are removed at the end. Prints one line per subject (ok, or failed and why);
exit status 0 when every subject is ok, 1 when one failed, 2 on a usage error.

The default treatment is remotemap.examples.fmri:TemporalStats (each voxel's temporal mean
and variance of a 4-D NIfTI image; needs numpy and nibabel where the steps run). Another one
is named with --treatment MODULE:CLASS; it is built as CLASS(n_parts=..., output_dir=...,
scratch=...) and must be importable where the steps run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_TREATMENT = "remotemap.examples.fmri:TemporalStats"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="directory holding one file per subject")
    parser.add_argument("--mode", default=None,
                        help="remotemap mode: serial, local, local_with_dumps, ssh, cluster "
                        "(default: the config's)")
    parser.add_argument("--pattern", default="*.nii*",
                        help="which files of DATA_DIR are subjects (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where the results go (default: DATA_DIR/derivatives)")
    parser.add_argument("--parts", type=int, default=4, help="parts per subject (default: 4)")
    parser.add_argument("--max-parallel", type=int, default=None,
                        help="at most this many steps at once (default: as the mode allows)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="keep the run here; running again with it resumes the run")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="a directory every worker sees, for the parts' files (default: "
                        "the parts travel as values)")
    parser.add_argument("--treatment", default=DEFAULT_TREATMENT, metavar="MODULE:CLASS",
                        help="the treatment class (default: %(default)s)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a mode option, e.g. n_jobs=4 or hosts='[\"node1\"]' (VALUE is "
                        "read as JSON when it can be); repeatable")
    parser.add_argument("--config", default=None, help="remotemap config file to use")
    parser.add_argument("--verify", action="store_true",
                        help="check each result against the treatment's verify(subject, "
                        "result), e.g. the same computation done in one piece")
    return parser.parse_args(argv)


def mode_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text  # a plain string, e.g. a host name
    return options


def load_treatment_class(spec: str) -> Any:
    module_name, sep, class_name = spec.partition(":")
    if not sep:
        raise ValueError(f"--treatment {spec!r}: expected MODULE:CLASS")
    return getattr(importlib.import_module(module_name), class_name)


def find_subjects(data_dir: Path, pattern: str) -> list[str]:
    """The subject files as absolute paths (the steps may run on another host, in another
    directory), sorted; a dangling link counts (its subject fails, naming it)."""
    folder = Path(os.path.abspath(data_dir))
    return sorted(str(p) for p in folder.glob(pattern) if not p.is_dir())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = mode_options(args.option)
        treatment_class = load_treatment_class(args.treatment)
        if not args.data_dir.is_dir():
            raise ValueError(f"{args.data_dir} is not a directory")
        subjects = find_subjects(args.data_dir, args.pattern)
        if not subjects:
            raise ValueError(f"no files matching {args.pattern!r} in {args.data_dir}")
        output = args.output if args.output is not None else args.data_dir / "derivatives"
        treatment = treatment_class(n_parts=args.parts, output_dir=output, scratch=args.scratch)
    except (ValueError, ImportError, AttributeError, TypeError) as exc:
        print(f"dispatch_subjects: error: {exc}", file=sys.stderr)
        return 2

    from remotemap.staged import Staged
    from remotemap.workflow.treatment import dispatch

    print(f"dispatching {len(subjects)} subjects from {args.data_dir} "
          f"({type(treatment).__name__}, {args.parts} parts each) on "
          f"{args.mode or 'the configured mode'}", flush=True)
    # Each subject's file goes to the host its steps run on (the identity on local modes).
    report = dispatch(treatment, [Staged(s) for s in subjects], args.mode,
                      max_parallel=args.max_parallel, run_dir=args.run_dir, config=args.config,
                      **options)
    failed = 0
    width = max(len(label) for label in report.subjects)
    for label, outcome in report.subjects.items():
        if not outcome.ok:
            failed += 1
            print(f"{label:<{width}}  FAILED  {outcome.error}")
            continue
        checked = ""
        if args.verify and hasattr(treatment, "verify"):
            try:
                treatment.verify(outcome.subject, outcome.value)
                checked = "  (verified)"
            except AssertionError as exc:
                failed += 1
                print(f"{label:<{width}}  FAILED  verify: {exc}")
                continue
        print(f"{label:<{width}}  ok      {outcome.value}{checked}")
    print(f"{len(subjects) - failed} of {len(subjects)} subjects ok"
          + (f", {failed} failed" if failed else ""))
    if report.workflow.run_dir is not None and failed:
        print(f"rerun with --run-dir {report.workflow.run_dir} to redo only what did not finish")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
