"""Cold start, measured inside a fresh interpreter: ``python -m benchmarks.cold CONTENDER``.

Prints one JSON object: ``import_s``, the imports a user of the contender writes, and
``first_result_s``, from just before a one-task call to its result in hand (worker start-up
included, interpreter start and those imports excluded). ``benchmarks.run`` starts this script
a few times per contender.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.cold CONTENDER", file=sys.stderr)
        return 2
    from benchmarks.contenders import Runner, import_for
    from benchmarks.tasks import add_one

    name = argv[0]
    started = time.perf_counter()
    import_for(name)
    imported = time.perf_counter()
    runner = Runner(name)
    values = runner.map(add_one, [(41,)])
    done = time.perf_counter()
    runner.close()
    if values != [42]:
        print(f"{name} returned {values!r}, expected [42]", file=sys.stderr)
        return 1
    report = {"import_s": imported - started, "first_result_s": done - imported}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
