"""``python -m remotemap.backends.cluster_engine start RUN_DIR ROUND``: the cluster engine's
program, by the name it has always had.

The engine lives in ``remotemap.backends.cluster.engine``; this module only runs it. It stays
because callers on other hosts start the engine by this name: a newer remotemap submitting
through a host with an older install, and jobs or scripts written before the package existed.
"""

from __future__ import annotations

import sys

from remotemap.backends.cluster.engine import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
