"""Script assembly: includes declare what they need and are inlined once per script."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from swarm_redis.engine import scripts


def test_every_function_is_defined_once_per_script() -> None:
    for script in scripts.all_scripts():
        names = Counter(re.findall(r"^local function (\w+)", script.source, re.MULTILINE))
        twice = [name for name, count in names.items() if count > 1]
        assert twice == [], f"{script.name} defines {twice} more than once"


def test_a_script_carries_only_the_includes_it_needs() -> None:
    heartbeat = scripts.load("heartbeat").source
    assert "local function lease_error" in heartbeat
    assert "local function queue_many" not in heartbeat
    assert "local function apply_changes" not in heartbeat
    apply_update = scripts.load("apply_update").source
    # apply.lua names queue, check and records itself; each is inlined before apply's own code
    for needed in ("queue_many", "chk_pairs", "corrupt"):
        assert apply_update.index(f"local function {needed}") < apply_update.index(
            "local function apply_changes"
        )


def test_include_cycle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "includes").mkdir()
    (tmp_path / "includes" / "a.lua").write_text("--!include b\n", encoding="utf-8")
    (tmp_path / "includes" / "b.lua").write_text("--!include a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="include cycle"):
        scripts._expand("--!include a\n", tmp_path)


def test_an_include_named_twice_expands_once(tmp_path: Path) -> None:
    (tmp_path / "includes").mkdir()
    (tmp_path / "includes" / "a.lua").write_text("local A = 1\n", encoding="utf-8")
    (tmp_path / "includes" / "b.lua").write_text("--!include a\nlocal B = A\n", encoding="utf-8")
    text = scripts._expand("--!include a\n--!include b\n--!include a\n", tmp_path)
    assert text.count("local A = 1") == 1
    assert text.index("local A = 1") < text.index("local B = A")
