"""The shell code that turns a new mount namespace into another machine's file tree.

:func:`mount_script` hides directories under fresh tmpfs mounts and shows chosen files or
directories at chosen places (bind mounts), in an order that works when a source lies under a
hidden directory or a target does: every source is first bound into a holding tmpfs, then the
directories are hidden, then each holding mount is moved to its target. Run it as root under
``unshare --mount --propagation private`` (so nothing propagates back to the machine); the
mounts end with the namespace's last process.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Where the holding mounts sit while the script runs (hidden afterwards like the rest).
_HOLD = Path("/mnt")
#: Directories whose tmpfs stays world-writable with the sticky bit, as on any machine.
_STICKY = {Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")}
#: Never hidden: the host runs the machine's programs and Python from these.
_SYSTEM = [Path(p) for p in ("/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/proc",
                              "/sys", "/dev", "/var")]  # fmt: skip


def caller_paths(checkout: Path) -> list[Path]:
    """The directories a host of its own must not see: temp and shared-memory dirs, homes,
    /run and /mnt (this machine's state), /opt and /srv, the checkout's parent (the checkout and
    its .venv), this interpreter's prefix and the XDG directories the caller set."""
    found = [Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm", "/home", "/root", "/run",
                               "/mnt", "/opt", "/srv", "/media")]  # fmt: skip
    found.append(checkout.parent if checkout.parent != Path("/") else checkout)
    found += [Path(sys.prefix), Path(sys.base_prefix)]
    found += [Path(os.environ[v]) for v in ("XDG_STATE_HOME", "XDG_CACHE_HOME",
              "XDG_CONFIG_HOME", "XDG_DATA_HOME") if os.environ.get(v)]  # fmt: skip
    return outermost(p.resolve() for p in found)


def outermost(paths: Iterable[Path]) -> list[Path]:
    """Existing directories among ``paths``, without those inside another one or the system's
    own (``/usr``, ``/etc``, ...: hiding them would hide the machine's programs)."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        system = any(path == s or s.is_relative_to(path) for s in _SYSTEM)
        if path.is_dir() and not system and not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def mount_script(hide: Sequence[Path], show: Sequence[tuple[Path, Path]]) -> str:
    """Shell code: a tmpfs over each of ``hide``; then each ``(source, target)`` of ``show``
    (a file or a directory of this machine) bound at ``target``. Fails at the first error."""
    lines = ["set -e", f"mount -t tmpfs -o mode=0755,size=1m rmhost-hold {_HOLD}"]
    for i, (source, _) in enumerate(show):
        held = shlex.quote(str(_HOLD / str(i)))
        lines.append(f"mkdir {held}" if source.is_dir() else f"touch {held}")
        lines.append(f"mount --bind {shlex.quote(str(source))} {held}")
    for path in hide:
        if path == _HOLD:
            continue  # the holding tmpfs hides it already
        mode = "1777" if path in _STICKY else "0700" if path == Path("/root") else "0755"
        lines.append(f"mount -t tmpfs -o mode={mode} rmhost {shlex.quote(str(path))}")
    for i, (source, target) in enumerate(show):
        quoted = shlex.quote(str(target))
        parent = shlex.quote(str(target.parent))
        make = f"mkdir -p {quoted}" if source.is_dir() else f"mkdir -p {parent} && touch {quoted}"
        lines.append(f"[ -e {quoted} ] || {{ {make}; }}")
        lines.append(f"mount --move {shlex.quote(str(_HOLD / str(i)))} {quoted}")
    return "\n".join(lines) + "\n"
