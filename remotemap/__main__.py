"""``python -m remotemap``: the same as the ``remotemap`` command."""

from remotemap.cli import main

# Guarded: process pools that spawn workers re-import the main module under another name.
if __name__ == "__main__":
    raise SystemExit(main())
