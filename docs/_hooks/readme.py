"""mkdocs hook: the README is the site's home page, so the two never say different things.

The README links to the manuals as ``docs/<page>.md`` (right on the repository's front page); on
the site those pages sit beside the home page, so the prefix is dropped. Any other relative link
in the README would point outside the site, and the strict build reports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_as_home(text: str) -> str:
    """The README's Markdown with its ``docs/`` links made relative to the site's root."""
    return re.sub(r"\]\(docs/", "](", text)


def on_files(files: Files, config: Any, **_: Any) -> Files:
    """Add the README as ``index.md`` (the docs folder has no home page of its own)."""
    content = readme_as_home(README.read_text(encoding="utf-8"))
    files.append(File.generated(config, "index.md", content=content))
    return files
