"""remotemap's imports run one way: down the layers, and never in a circle.

Every module under ``remotemap/`` is parsed (not imported) and every ``remotemap`` import it
makes is collected: at top level, inside functions, and under ``if TYPE_CHECKING:`` (type-only
imports must point down too: a type that lives above is a sign the code lives in the wrong
place). A module may import its own layer or a lower one; the test fails when an import
points up, when a module is missing from :data:`LAYERS`, or when modules import each other in
a circle (however hidden, e.g. in a function).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import remotemap

PACKAGE_DIR = Path(remotemap.__file__).parent

#: The one table of layers, bottom up. A module takes the layer of the longest entry that is
#: itself or one of its packages.
LAYERS: dict[str, int] = {
    # 1. What the worker runs and the on-disk protocol: no configuration, no network.
    "remotemap._version": 1,
    "remotemap.errors": 1,
    "remotemap.execution": 1,
    "remotemap.capture": 1,
    "remotemap.protocol": 1,
    "remotemap.chunk_packs": 1,
    "remotemap.worker": 1,
    "remotemap.worker_run": 1,
    "remotemap.worker_children": 1,
    "remotemap.worker_stdin": 1,
    "remotemap.pilot": 1,
    "remotemap.pilot_slots": 1,
    "remotemap.preload": 1,
    "remotemap.tasks": 1,
    "remotemap.integrity": 1,
    "remotemap.rundir": 1,
    "remotemap.leftovers": 1,
    "remotemap.buffers": 1,
    "remotemap.outofband": 1,
    "remotemap.plain": 1,
    "remotemap.interrupts": 1,
    "remotemap.fingerprint": 1,
    "remotemap.progress": 1,
    "remotemap.server_client": 1,
    "remotemap.locks": 1,
    "remotemap.state": 1,
    "remotemap.staged": 1,
    # 2. Reaching hosts and reading settings.
    "remotemap.ssh": 2,
    "remotemap.config": 2,
    # 3. The Session contract and the driver that owns retries, fail-fast and resume.
    "remotemap.session": 3,
    "remotemap.driver": 3,
    "remotemap.runs": 3,
    "remotemap.run_records": 3,
    "remotemap.timeline": 3,
    "remotemap.call_options": 3,
    # 4. The modes, each fulfilling the Session contract.
    "remotemap.backends": 4,
    # 5. What callers use.
    "remotemap.api": 5,
    "remotemap.executor": 5,
    "remotemap.future_errors": 5,
    "remotemap.joblib_backend": 5,
    "remotemap.workflow": 5,
    "remotemap.run_index": 5,
    # 6. Programs built on the public interface.
    "remotemap.cli": 6,
    "remotemap.__main__": 6,
    "remotemap.examples": 6,
    # The package itself re-exports the public names lazily (PEP 562): it imports upper
    # modules only in ``__getattr__`` and under TYPE_CHECKING, so importing a lower module
    # never runs them. It sits at the top.
    "remotemap": 6,
}

#: Upward imports tolerated for now, each with why and who removes it. Keep it short: an
#: entry that no longer matches an import fails the test, so the list can only shrink.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

#: Import circles tolerated for now, as the set of modules in each; same rule as above.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def targets(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> list[str]:
    """The remotemap modules one import statement loads (a name that is a submodule counts
    as that submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
            for a in node.names]


def imports_of(name: str, path: Path, modules: set[str]) -> list[Import]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in targets(node, package, modules):
                if target.split(".")[0] == "remotemap" and target != name:
                    found.append(Import(name, target, node.lineno, type_only))
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for statement in node.body:
                visit(statement, True)
            for statement in node.orelse:
                visit(statement, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def layer_of(module: str) -> int | None:
    candidate = module
    while candidate:
        if candidate in LAYERS:
            return LAYERS[candidate]
        candidate = candidate.rpartition(".")[0]
    return None


def every_import() -> list[Import]:
    modules = all_modules()
    return [i for name, path in modules.items() for i in imports_of(name, path, set(modules))]


def test_every_module_has_a_layer() -> None:
    missing = [m for m in all_modules() if m != "remotemap" and layer_of(m) is None]
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"
    # The package's own entry must not give a layer to modules the table forgot.
    assert all(layer_of(m) is not None for m in all_modules())


def test_imports_point_down() -> None:
    upward: dict[str, None] = {}  # ordered and without repeats
    tolerated: set[tuple[str, str]] = set()
    for imp in every_import():
        low, high = layer_of(imp.importer), layer_of(imp.imported)
        assert low is not None and high is not None, imp
        if high <= low:
            continue
        key = (imp.importer, imp.imported)
        if key in KNOWN_UPWARD:
            tolerated.add(key)
            continue
        kind = "type-only import" if imp.type_only else "import"
        upward[f"{imp.importer} (layer {low}) line {imp.line}: {kind} of "
               f"{imp.imported} (layer {high})"] = None
    assert not upward, "imports that point up:\n" + "\n".join(upward)
    stale = set(KNOWN_UPWARD) - tolerated
    assert not stale, f"remove these entries from KNOWN_UPWARD, they no longer occur: {stale}"


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in edges.get(todo.pop(), set()) - seen:
            seen.add(target)
            todo.append(target)
    return seen


def find_cycles(edges: dict[str, set[str]]) -> set[frozenset[str]]:
    """The groups of modules that import each other in a circle (strongly connected
    components of more than one module), whatever order the imports are read in."""
    reach = {m: reachable(edges, m) for m in edges}
    return {frozenset({m} | {n for n in reach[m] if m in reach.get(n, set())})
            for m in edges if m in reach[m]}


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {m: set() for m in all_modules()}
    for imp in every_import():
        edges[imp.importer].add(imp.imported)
    # Every module "imports" the lazy package ``remotemap`` only as its parent package, which
    # this test does not count, so the package closes no circle.
    cycles = find_cycles(edges)
    unknown = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not unknown, "modules that import each other in a circle:\n" + "\n".join(
        " <-> ".join(c) for c in unknown)
    stale = set(KNOWN_CYCLES) - cycles
    assert not stale, f"remove these entries from KNOWN_CYCLES, they no longer occur: {stale}"


def test_the_checker_sees_hidden_and_type_only_imports(tmp_path: Path) -> None:
    """An import inside a function or under TYPE_CHECKING is found and marked as such."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from remotemap import errors\n"
        "if TYPE_CHECKING:\n"
        "    from remotemap.api import remote_map\n"
        "def f():\n"
        "    from remotemap.cli import main\n")
    modules = set(all_modules())
    found = {(i.imported, i.type_only) for i in imports_of("remotemap.probe", source, modules)}
    assert found == {("remotemap.errors", False), ("remotemap.api", True),
                     ("remotemap.cli", False)}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {
        frozenset({"a", "b", "c"})}
