"""Files that are only type-checked (by mypy, in the test command and tests/test_typed_api.py),
never run: each says which calls of the public API a type checker accepts, with which types,
and which it refuses."""
