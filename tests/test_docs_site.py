"""The documentation site builds strictly, and what it and the README say stays true.

``mkdocs build --strict`` fails on any warning: mkdocs.yml turns a broken link or anchor, a
page left out of the nav and an unresolved cross-reference into warnings, and a test below
breaks a copy of the docs to prove each of them really fails the build, naming the culprit.
The README is what a package index shows, where relative links break: its links must be
absolute (into the built site) or in-page anchors. No network: the build fetches nothing.
"""

from __future__ import annotations

import ast
import html
import inspect
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mkdocs.config import load_config as load_mkdocs_config
from mkdocs.config.defaults import MkDocsConfig

import remotemap
from remotemap.backends import register
from remotemap.config import load_config

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SITE_URL = "https://remotemap.readthedocs.io/en/latest/"
#: Material's banner about MkDocs 2.0 is noise on stderr, not a warning of the build.
BUILD_ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
#: A Markdown inline link's target: ``[text](target)``.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``project``'s mkdocs.yml into ``site``, run from there
    (the paths in mkdocs.yml are relative to it)."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project, env=BUILD_ENV, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The site, built once for this module from the repository's docs."""
    site = tmp_path_factory.mktemp("site")
    done = build(REPO, site)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    yield site


def page_text(site: Path, page: str) -> str:
    """A built page's text, tags dropped and entities decoded, whitespace collapsed."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())


def squeeze(text: str) -> str:
    """Letters and digits only: markup and line breaks differ between docstring and page, and
    a Sphinx role shows its target (``~`` shows the last component only)."""
    text = re.sub(r":\w+:`~(?:\w+\.)*(\w+)`", r"\1", text)
    return re.sub(r"\W+", "", re.sub(r":\w+:`", "", text))


# --- the build --------------------------------------------------------------------------------


def test_api_page_documents_every_public_name(site: Path) -> None:
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="(remotemap\.[\w.]+)"', api))
    wanted = {f"remotemap.{name}" for name in remotemap.__all__}
    wanted |= {"remotemap.backends.register", "remotemap.session.Session",
               "remotemap.session.Session.submit", "remotemap.session.Session.wait",
               "remotemap.session.Backend.open"}
    assert wanted <= anchors, f"missing from the API page: {sorted(wanted - anchors)}"
    # the docstrings themselves are there, not only the names
    text = page_text(site, "api")
    for function in (remotemap.remote_map, register):
        doc = inspect.getdoc(function)
        assert doc is not None
        summary = doc.split("\n\n")[0]
        assert squeeze(summary) in squeeze(text), f"{function.__qualname__}: {summary!r}"


def test_docstring_roles_become_links_to_the_documented_names(site: Path) -> None:
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # remote_map's docstring says :class:`RemoteException`: a link to its entry on the page
    assert 'href="#remotemap.RemoteException"' in api
    leftovers = re.findall(r":(?:class|func|meth|mod|attr|exc|data):", page_text(site, "api"))
    assert not leftovers, f"Sphinx roles left as text on the API page: {leftovers[:5]}"


def test_every_source_page_is_built(site: Path) -> None:
    """omitted_files: warn makes a page missing from the nav fail the build; here, the other
    way round: every docs/*.md is a page of the site."""
    for source in DOCS.glob("*.md"):
        page = site / ("" if source.stem == "index" else source.stem) / "index.html"
        assert page.is_file(), f"{source.name} built no page"


def test_strict_build_fails_on_each_kind_of_broken_reference(tmp_path: Path) -> None:
    """A copy of the docs with four faults: each is a warning, so the strict build fails and
    its output names every one (mkdocs reports all warnings before it aborts)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(DOCS, project / "docs")
    for shared in ("remotemap", "scripts"):  # the API's source and the griffe extension
        (project / shared).symlink_to(REPO / shared)
    with (project / "docs" / "quickstart.md").open("a", encoding="utf-8") as page:
        page.write("\n[a page](no-such-page.md), [an anchor](config.md#no-such-anchor),"
                   " [a name][remotemap.no_such_name]\n")
    (project / "docs" / "orphan-page.md").write_text("# Not in the nav\n", encoding="utf-8")
    done = build(project, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Aborted" in output and "strict mode" in output, output
    for culprit in ("'no-such-page.md'", "'#no-such-anchor'", "'remotemap.no_such_name'",
                    "orphan-page.md"):
        assert culprit in output, f"the build did not name {culprit}:\n{output}"


def mkdocs_config() -> MkDocsConfig:
    """mkdocs.yml as mkdocs reads it (validated, defaults filled in)."""
    return load_mkdocs_config(str(REPO / "mkdocs.yml"))


def test_mkdocs_yml_keeps_the_build_offline_and_strict() -> None:
    config = mkdocs_config()
    assert config.site_url == SITE_URL
    assert config.theme["font"] is False, "Material would link Google Fonts"
    assert not {"material/privacy", "material/social"} & set(config.plugins)
    assert "inventories" not in (REPO / "mkdocs.yml").read_text(encoding="utf-8"), \
        "an inventory would be fetched at build time"
    links, nav = config.validation.links, config.validation.nav
    for level in (links.not_found, links.anchors, links.absolute_links, nav.omitted_files):
        assert level == logging.WARNING


# --- the README -------------------------------------------------------------------------------


def github_slug(heading: str) -> str:
    """The anchor a package index or GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_links_are_absolute_or_in_page_and_reach_built_pages(site: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = LINK.findall(readme)
    assert len(links) >= 10, links
    headings = {github_slug(h) for h in re.findall(r"^#+ (.+)$", readme, flags=re.MULTILINE)}
    for link in links:
        if link.startswith("#"):
            assert link[1:] in headings, f"README.md: in-page link {link} has no heading"
            continue
        assert re.match(r"https?://", link), f"README.md: relative link {link} breaks on PyPI"
        if not link.startswith(SITE_URL):
            continue
        path, _, anchor = link[len(SITE_URL):].partition("#")
        page = site / path / "index.html"
        assert page.is_file(), f"README.md: {link} is no page of the built site"
        if anchor:
            assert f'id="{anchor}"' in page.read_text(encoding="utf-8"), f"README.md: {link}"


def test_readme_lists_every_page_of_the_nav() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")

    def pages(nav: Any) -> Iterator[str]:
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    # the home page is the site's root; the soma-workflow notes are background, not a guide
    for page in set(pages(mkdocs_config().nav)) - {"index.md", "notes-soma-workflow-slurm.md"}:
        assert f"({SITE_URL}{page.removesuffix('.md')}/)" in readme, f"README.md lacks {page}"


# --- the pages' claims ------------------------------------------------------------------------


def test_cli_page_covers_every_subcommand() -> None:
    done = subprocess.run([sys.executable, "-m", "remotemap", "--help"], capture_output=True,
                          text=True, timeout=60, check=True)
    commands = done.stdout.split("COMMAND\n", 1)[1]
    names = re.findall(r"^ {4}(\w+) ", commands, flags=re.MULTILINE)
    assert {"config", "status", "demo", "runs", "collect"} <= set(names), names
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in names:
        assert re.search(rf"^## `remotemap {name}\b", cli, flags=re.MULTILINE), \
            f"docs/cli.md has no section for `remotemap {name}`"


def cli_sections() -> dict[str, str]:
    """docs/cli.md's sections by command words ("config set", "runs"), heading included."""
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    parts = re.split(r"^(?=## `remotemap )", cli, flags=re.MULTILINE)[1:]
    named = [(re.match(r"## `remotemap ([a-z]+(?: [a-z]+)*)", part), part) for part in parts]
    return {match[1]: part for match, part in named if match}  # `remotemap --version` has none


@pytest.mark.parametrize("words", ["config get", "config set", "config unset", "config edit",
                                   "status", "demo", "runs", "runs show", "runs results",
                                   "runs clean", "runs retry", "runs plot", "retry", "clean",
                                   "collect", "cancel"])
def test_cli_page_documents_each_commands_options_and_exit_status(words: str) -> None:
    """Every option `--help` shows is in the command's section, and so is its exit status."""
    done = subprocess.run([sys.executable, "-m", "remotemap", *words.split(), "--help"],
                          capture_output=True, text=True, timeout=60, check=True)
    section = cli_sections()[words]
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", done.stdout))
    for option in options - {"--help", "--config"}:  # those two are the page's preamble
        assert option in section, f"docs/cli.md: `remotemap {words}` lacks {option}"
    assert re.search(r"[Ee]xit status", section), f"`remotemap {words}`: no exit status"


def remotemap_calls(text: str) -> Iterator[ast.Call]:
    """Every ``remote_map(...)``, ``remote_imap(...)`` or ``Executor(...)`` call in the text's
    code spans and Python blocks that parses as Python."""
    for code in re.findall(r"`([^`\n]+)`", text) + re.findall(r"```python\n(.*?)```", text,
                                                                flags=re.DOTALL):
        try:
            tree = ast.parse(code.strip())
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("remote_map", "remote_imap", "Executor"):
                yield node


def check_call(call: ast.Call) -> None:
    """The call's keywords are the function's parameters or valid options of its mode."""
    assert isinstance(call.func, ast.Name)
    function = getattr(remotemap, call.func.id)
    parameters = set(inspect.signature(function).parameters) - {"options"}
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    mode_at = 0 if call.func.id == "Executor" else 3
    mode_node = keywords.get("mode", call.args[mode_at] if len(call.args) > mode_at else None)
    mode = ast.literal_eval(mode_node) if mode_node is not None else "local"
    options = {name: ast.literal_eval(value) for name, value in keywords.items()
               if name not in parameters}
    load_config().settings_for(mode, options)  # TypeError/ValueError names a bad option


def test_coming_from_page_shows_todays_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "coming-from.md").read_text(encoding="utf-8")
    implied = re.search(r"`from remotemap import \.\.\.` is\s+implied: (.*?)\.\n\n", text,
                        flags=re.DOTALL)
    assert implied is not None
    names = re.findall(r"`(\w+)`", implied[1])
    names += [n.strip() for line in re.findall(r"from remotemap import ([\w, ]+)", text)
              for n in line.split(",")]
    assert set(names) <= set(remotemap.__all__), set(names) - set(remotemap.__all__)
    calls = list(remotemap_calls(text))
    assert len(calls) >= 15, len(calls)
    for call in calls:
        check_call(call)
    # the page's Python blocks run as they are, with f and xs as the page says
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {name: getattr(remotemap, name) for name in names}
    namespace.update(f=abs, xs=[-1, 2, -3])
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        exec(compile(block, "docs/coming-from.md", "exec"), namespace)
    assert namespace["ys"] == [1, 2, 3]


def test_tutorial_first_step_runs_as_written(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    first = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(first, "docs/tutorial.md", "exec"), namespace)
    outcomes = namespace["report"].subjects
    assert [o.ok for o in outcomes.values()] == [True, True, False]
    assert sorted(p.name for p in (tmp_path / "tstats").iterdir()) == [
        "example4d_tstats.nii", "functional_tstats.nii"]
