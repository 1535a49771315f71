"""mkdocs hook: Sphinx cross-reference roles in docstrings rendered as plain code.

The package's docstrings name other objects the Sphinx way (``:class:`~swarm_redis.TaskRecord```);
mkdocstrings renders docstrings as Markdown, which would print the role itself. This hook drops
the role and, for ``~``, keeps only the last part of the dotted name, as Sphinx shows it.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(
    r":(?:py:)?(?:data|class|func|meth|attr|mod|exc|obj|const):<code>(~?)([^<]*)</code>"
)


def strip_roles(html: str) -> str:
    """The HTML with every rendered ``:role:`target``` turned into ``<code>target</code>``."""
    return ROLE.sub(
        lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>",
        html,
    )


def on_page_content(html: str, **_: Any) -> str:
    """Apply :func:`strip_roles` to every page (only the API reference has such roles)."""
    return strip_roles(html)
