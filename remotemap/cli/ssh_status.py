"""The SSH part of ``remotemap status``: the configured hosts, and with ``--check`` whether
each one can be reached and can run remotemap (probed in parallel, each within its timeout)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remotemap.cli.status_context import StatusContext


def ssh_block(ctx: StatusContext) -> bool:
    settings: dict[str, Any] = ctx.config.section("ssh")
    hosts: list[str] = list(settings.get("hosts") or [])
    if not hosts:
        ctx.line("ssh hosts: none configured (remotemap config set ssh.hosts '[\"host\"]')")
        return True
    ctx.line("ssh hosts:")
    if not getattr(ctx.args, "check", False):
        for host in hosts:
            ctx.line(f"  {host}")
        ctx.line("  (remotemap status --check connects to each)")
        return True
    from remotemap.ssh import connection_options, probe, resolve_host

    def check(host: str) -> tuple[str, Any]:
        try:
            spec = resolve_host(host, **connection_options(settings))
        except Exception as exc:
            return host, f"error: {exc}"
        timeout = float(settings.get("connect_timeout") or 10)
        return host, probe(spec, remote_python=settings.get("python") or "python3",
                           timeout=timeout)

    ok = True
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        for host, result in pool.map(check, hosts):
            if isinstance(result, str):
                ctx.line(f"  {host}: {result}")
                ok = False
                continue
            ctx.line(f"  {result.summary()}")
            ok = ok and result.status == "ok" and result.remotemap_version is not None
    return ok
