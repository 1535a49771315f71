"""Profiling a benchmark body with pyinstrument (``--profile DIR``; pyinstrument is not a
dependency of the package)."""

from __future__ import annotations

import os
from collections.abc import Callable


def profile(body: Callable[[], int], folder: str, name: str) -> str:
    """Run ``body`` under pyinstrument; write text and HTML reports; the text path."""
    from pyinstrument import Profiler

    os.makedirs(folder, exist_ok=True)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    body()
    profiler.stop()
    path = os.path.join(folder, name)
    with open(path + ".txt", "w", encoding="utf-8") as f:
        f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    with open(path + ".html", "w", encoding="utf-8") as f:
        f.write(profiler.output_html())
    return path + ".txt"
