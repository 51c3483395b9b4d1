"""The config's documentation stays true: the example file and docs/config.md name every
built-in mode and every key of its section, so neither can go stale again."""

from __future__ import annotations

import os
import re
from pathlib import Path

from remotemap.config import SCHEMA, Section, load_config
from remotemap.config.editing import example_text
from remotemap.config.modes import BUILTIN_MODES

REPO = Path(__file__).resolve().parent.parent
CONFIG_DOC = REPO / "docs" / "config.md"


def builtin_sections() -> list[Section]:
    """[remotemap] and the built-in modes' sections (a plug-in installed here documents its
    own section, not remotemap's example or docs)."""
    return [s for s in SCHEMA.values() if s.name == "remotemap" or s.name in BUILTIN_MODES]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- the example file ----------------------------------------------------------------------


def uncommented_example() -> str:
    """The example with every "# key = default" line turned into a real setting."""
    return re.sub(r"^# (\w+ = )", r"\1", example_text(), flags=re.MULTILINE)


def test_example_validates_and_its_values_are_the_defaults(tmp_path: Path) -> None:
    as_shipped = load_config(write(tmp_path / "example.toml", example_text()))
    enabled = load_config(write(tmp_path / "enabled.toml", uncommented_example()))
    for section in builtin_sections():
        defaults = {k.name: k.default for k in section.keys}
        assert as_shipped.section(section.name) == defaults
        assert enabled.section(section.name) == defaults
        # Every key must really be set in the uncommented copy, not just defaulted.
        for key in section.keys:
            assert enabled.origin(f"{section.name}.{key.name}") == str(tmp_path / "enabled.toml")


def test_example_documents_every_key_with_a_comment_above() -> None:
    lines = example_text().splitlines()
    section = None
    seen: set[str] = set()
    for i, line in enumerate(lines):
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
            continue
        setting = re.fullmatch(r"# (\w+) = .*", line)
        if setting and section is not None:
            seen.add(f"{section}.{setting.group(1)}")
            above = lines[i - 1]
            is_doc = above.startswith("# ") and not re.fullmatch(r"# \w+ = .*", above)
            assert is_doc, f"no comment line above {line!r}"
    assert seen == {f"{s.name}.{k.name}" for s in builtin_sections() for k in s.keys}


def test_repository_example_is_a_link_to_the_packaged_one() -> None:
    link = REPO / "config" / "remotemap.example.toml"
    assert link.is_symlink()
    assert not os.path.isabs(os.readlink(link))
    assert link.read_text(encoding="utf-8") == example_text()


def test_docs_describe_every_key() -> None:
    docs = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    for section in builtin_sections():
        assert f"[{section.name}]" in docs
        for key in section.keys:
            assert f"`{key.name}`" in docs


def doc_tables() -> dict[str, str]:
    """docs/config.md's reference, by section: the text under each ``### `[name]` `` heading."""
    parts = re.split(r"^### `\[(\w+)\]`.*$", CONFIG_DOC.read_text(encoding="utf-8"),
                     flags=re.MULTILINE)
    # A section's text ends at the next heading of any level.
    return {name: re.split(r"^#", text, maxsplit=1, flags=re.MULTILINE)[0]
            for name, text in zip(parts[1::2], parts[2::2], strict=True)}


def table_keys(text: str) -> list[str]:
    """The keys a section's table documents: its rows' first cells, `like_this`."""
    return re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE)


def test_docs_list_every_builtin_mode_and_every_option_in_its_section() -> None:
    tables = doc_tables()
    mode_row = next(line for line in tables["remotemap"].splitlines()
                    if line.startswith("| `mode` |"))
    missing_modes = [name for name in BUILTIN_MODES if f'`"{name}"`' not in mode_row]
    assert not missing_modes, f"{CONFIG_DOC}: the remotemap.mode row lacks {missing_modes}"
    for name in BUILTIN_MODES:
        section = SCHEMA.get(name)
        if section is None:  # a mode without options says so
            assert f"The mode `{name}` has no section" in CONFIG_DOC.read_text(encoding="utf-8")
            continue
        assert name in tables, f"{CONFIG_DOC}: no '### `[{name}]`' heading"
        documented = table_keys(tables[name])
        assert documented == section.key_names(), (
            f"{CONFIG_DOC}: the [{name}] table lists {documented}, the section declares "
            f"{section.key_names()} (same keys, same order)")


def test_the_docs_check_sees_a_missing_option() -> None:
    """The parsing above really finds rows: a table without a key's row does not pass."""
    tables = doc_tables()
    assert table_keys(tables["local"]) == ["n_jobs", "chunksize", "send", "keep_staged"]
    assert table_keys(tables["local"].replace("| `chunksize` |", "| chunksize |")) == [
        "n_jobs", "send", "keep_staged"]
