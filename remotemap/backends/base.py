"""The Session contract, re-exported where backends always found it (it lives in
:mod:`remotemap.session` so the driver can use it without importing the backends)."""

from remotemap.session import Backend, Session, TaskOptions

__all__ = ["Backend", "Session", "TaskOptions"]
