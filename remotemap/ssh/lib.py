"""Importing paramiko (on first use) without the warnings of its own old releases.

paramiko before 3.5 names ciphers that cryptography 43 moved (TripleDES, Blowfish) at import,
so with a newer cryptography every ssh run would print two CryptographyDeprecationWarnings
about paramiko's code, which the user can do nothing about (seen with paramiko 3.4, the lower
bound remotemap declares).
"""

from __future__ import annotations

import warnings


def import_paramiko_quietly() -> None:
    """Import paramiko now, so that the plain ``import paramiko`` statements after it find it
    loaded; called where remotemap first needs it."""
    with warnings.catch_warnings():
        # CryptographyDeprecationWarning is a UserWarning; only those raised in paramiko.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"paramiko(\.|$)")
        import paramiko  # noqa: F401
