"""A griffe extension for the documentation site (mkdocs.yml loads it): turns the Sphinx
roles remotemap's docstrings use (``:class:`Name```, ``:func:`~pkg.mod.name```, ``:mod:``,
``:meth:``, ``:attr:``, ``:exc:``, ``:data:``) into mkdocs-autorefs cross-references.

mkdocstrings renders docstrings as Markdown, where a role would show as ``:class:`` followed by
code. A role becomes an *optional* reference: a link when its target is documented on the
site, plain code when it is not (a private module), so the strict build fails only on the
references written as Markdown links, which must resolve.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

#: ``:role:`target``` with an optional ``~`` (show the last component only).
ROLE = re.compile(r":(?:class|func|meth|attr|mod|exc|data|obj):`(?P<tilde>~?)(?P<target>[\w.]+)`")


def _identifier(obj: griffe.Object, target: str) -> str:
    """The full dotted path of ``target`` as written in ``obj``'s docstring."""
    head = target.split(".", 1)[0]
    try:
        resolved = obj.resolve(head)
    except (griffe.NameResolutionError, KeyError, AttributeError):
        return target  # already a full path, or a name griffe cannot see: left as written
    return resolved + target[len(head):]


def _replace_roles(obj: griffe.Object, text: str) -> str:
    def autoref(found: re.Match[str]) -> str:
        target = found["target"]
        shown = target.rsplit(".", 1)[-1] if found["tilde"] else target
        identifier = html.escape(_identifier(obj, target), quote=True)
        code = f"<code>{html.escape(shown)}</code>"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return ROLE.sub(autoref, text)


class SphinxRoles(griffe.Extension):
    """Rewrites each loaded object's docstring once the package is loaded (names resolve)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _replace_roles(obj, obj.docstring.value)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    """``obj`` and every object it defines (aliases, which point elsewhere, left out)."""
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            found += _walk(member)
    return found
