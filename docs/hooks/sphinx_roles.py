"""A griffe extension for the API reference: Sphinx roles in docstrings become code spans.

fame's docstrings name other objects the Sphinx way (``:class:`Foo```,
``:func:`~fame.storage.open_storage```), which Markdown would show
literally. The reference shows them as code, ``Foo`` and ``open_storage``
(a leading ``~`` keeps the last component, as in Sphinx). Plain code spans,
not links: a link to a name the reference does not render would fail the
strict build. Loaded by ``mkdocs.yml`` (mkdocstrings' ``extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite each object's docstring once, when griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, obj.docstring.value)
