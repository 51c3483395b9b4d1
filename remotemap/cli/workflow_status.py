"""The workflow part of ``remotemap status``: the latest workflow runs and each step's state.

Read from the index of workflow runs (``remotemap.workflow.store``); a run whose process is
gone while its report still says "running" was killed half-way, and is shown as such.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remotemap.execution import this_host
from remotemap.state import pid_alive, state_dir
from remotemap.workflow.store import list_workflow_runs

if TYPE_CHECKING:
    from remotemap.cli.status_context import StatusContext

#: How many runs the report shows, latest first, and how many steps of each.
RUNS_SHOWN = 5
STEPS_SHOWN = 12
_REASON_CHARS = 100


def run_state(report: dict[str, Any]) -> str:
    state = str(report.get("state", "?"))
    if state == "running" and report.get("host") == this_host() \
            and not pid_alive(report.get("pid")):
        return "stopped half-way (its process is gone; rerun it with the same run_dir)"
    return state


def _describe_run(ctx: StatusContext, path: Any, report: dict[str, Any]) -> None:
    counts = report.get("counts") or {}
    counted = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    ctx.line(f"  {report.get('id', path.name)}  {report.get('name', '?')!r} on "
             f"{report.get('mode', '?')}: {run_state(report)}; {counted or 'no steps'}; "
             f"updated {report.get('updated', '?')}")
    ctx.line(f"    in {path}")
    steps = [s for s in report.get("steps") or [] if isinstance(s, dict)]
    if len(steps) <= STEPS_SHOWN:
        width = max((len(str(s.get("name", ""))) for s in steps), default=0)
        for step in steps:
            ctx.line(_step_line(step, width))
        return
    # A large run: every failed step (up to a point), the others counted by reason.
    failed = [s for s in steps if s.get("state") == "failed"]
    width = max((len(str(s.get("name", ""))) for s in failed[:STEPS_SHOWN]), default=0)
    for step in failed[:STEPS_SHOWN]:
        ctx.line(_step_line(step, width))
    if len(failed) > STEPS_SHOWN:
        ctx.line(f"    ... and {len(failed) - STEPS_SHOWN} more failed steps")
    grouped: dict[str, int] = {}
    for step in steps:
        if step.get("state") != "failed":
            key = f"{step.get('state', '?')}: {_short(step.get('reason'))}" \
                if step.get("reason") else str(step.get("state", "?"))
            grouped[key] = grouped.get(key, 0) + 1
    for key, n in grouped.items():
        ctx.line(f"    {n} step{'s' if n != 1 else ''} {key}")


def _short(reason: Any) -> str:
    text = str(reason or "")
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _step_line(step: dict[str, Any], width: int) -> str:
    state = str(step.get("state", "?")) + (" (reused)" if step.get("reused") else "")
    reason = _short(step.get("reason"))
    text = f"    {step.get('id', '?'):>4}  {step.get('name', '')!s:<{width}}  {state}"
    return f"{text}: {reason}" if reason and step.get("state") != "done" else text


def workflow_block(ctx: StatusContext) -> bool:
    runs = list_workflow_runs()
    if not runs:
        ctx.line(f"workflow runs: none yet (they are listed in {state_dir('workflows')})")
        return True
    more = f", the latest {RUNS_SHOWN} shown" if len(runs) > RUNS_SHOWN else ""
    ctx.line(f"workflow runs: {len(runs)} in {state_dir('workflows')}{more}")
    for path, report in runs[:RUNS_SHOWN]:
        _describe_run(ctx, path, report)
    # A failed workflow is the user's business, not a problem with this installation.
    return True
