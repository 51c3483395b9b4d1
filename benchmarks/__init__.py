"""Performance benchmarks for remotemap (not tests: pytest never collects them).

Run ``python -m benchmarks.run`` (``--quick`` for a smoke run, ``--json PATH`` to keep the
figures); see ``docs/benchmarks.md`` for what each number means.
"""
