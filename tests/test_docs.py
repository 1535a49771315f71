"""The README and the documentation site stay true: they build, their example runs, their names exist.

* The site (``mkdocs.yml``, pages in ``docs/``, the README as its home page) builds with
  ``mkdocs build --strict``: a broken link or anchor, a missing page or a public name whose
  docstring cannot be rendered fails.
* The README's example runs as written, on fakeredis and on a real Redis, and prints what the
  README shows.
* Every dotted ``swarm_redis.…`` name and every ``swarm_redis/…``, ``lua/…`` and ``tests/…`` path
  the README and the pages mention exists, and none goes through the table of old module paths.
* Every ``swarm-redis …`` command line shown parses with the command's real argument parser.
* The key table exists once: generated from ``engine/keys.py``, whose table lists exactly
  ``RUN_KEY_NAMES``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import redis

import swarm_redis
from swarm_redis import _moved
from swarm_redis.constants import TASK_STATUSES
from swarm_redis.engine.keys import RUN_KEY_NAMES
from swarm_redis.ops.cli import parse_command_line

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: Rewritten by hand elsewhere; its links are checked by the build, its words are not checked here.
FREE_TEXT = {"benchmarks.md"}


def pages() -> list[Path]:
    """The README and every Markdown page of the site."""
    return [README, *sorted(DOCS.glob("*.md"))]


def load_hook(name: str) -> ModuleType:
    """A module of docs/_hooks/ (not a package: mkdocs loads them by path)."""
    spec = importlib.util.spec_from_file_location(
        f"_docs_hook_{name}", DOCS / "_hooks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _need(module: str) -> None:
    """Skip without ``module`` (the extra ``docs``), or fail in CI, which installs it."""
    if importlib.util.find_spec(module) is None:
        why = f"{module} is not installed (pip install -e '.[docs]')"
        if os.environ.get("CI", "").strip().lower() in ("true", "1"):
            pytest.fail(why)
        pytest.skip(why)


# --- the site -----------------------------------------------------------------------------------


def test_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    _need("mkdocs")
    _need("mkdocstrings_handlers.python")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    # the home page is the README, its links made relative to the site
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Several replicas" in home and 'href="api/"' in home
    # the key table was generated into the keys page, one row per documented key
    keys_page = (site / "keys" / "index.html").read_text(encoding="utf-8")
    assert "key-table" not in keys_page
    assert "<code>reap_lock</code>" in keys_page and "<code>distributor</code>" in keys_page
    # the reference holds every public name, rendered from its docstring
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for name in swarm_redis.__all__:
        assert f'id="swarm_redis.{name}"' in reference, name
    assert not re.search(r":(?:class|func|meth|attr|data|exc):<code>", reference), "Sphinx role"


def test_reference_lists_every_public_name_by_its_stable_path() -> None:
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    directives = re.findall(r"^::: (\S+)$", text, flags=re.M)
    assert sorted(directives) == sorted(f"swarm_redis.{n}" for n in swarm_redis.__all__)
    for page in pages():
        for target in re.findall(r"^::: (\S+)$", page.read_text(encoding="utf-8"), flags=re.M):
            assert target.count(".") == 1, f"{page.name}: {target} is an internal module path"


# --- the README ---------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_readme_is_short_and_says_how_to_install() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 15 * 1024
    install = readme_section("Install")
    assert "not on the package index" in install
    assert "pip install -e '.[prometheus]'" in install
    assert "pip install 'swarm-redis[prometheus] @ git+https://" in install
    # nowhere an install from the index
    for page in pages():
        for line in page.read_text(encoding="utf-8").splitlines():
            if "pip install" in line and "swarm-redis[" in line:
                assert "@ git+" in line, f"{page.name}: {line}"


def test_readme_test_command_is_what_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(python3 -m venv .venv && .*)\n```", text)
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith(".venv/bin/swarm-redis demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = re.search(r"^\.venv/bin/python -m pip install -q -e '(\.\[[^\]]+\])'$", ci, re.M)
    assert install is not None
    assert f"pip install -q -e '{install.group(1)}'" in tests
    assert tests.endswith("&& .venv/bin/python -m pytest -q")
    assert re.search(r"^\.venv/bin/python -m pytest -q ", ci, re.M)


def test_readme_example_runs_as_written(
    make_client: Callable[..., redis.Redis],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    section = readme_section("Example")
    code, shown = re.findall(r"```python\n(.*?)```\n+```text\n(.*?)```", section, flags=re.S)[0]
    assert 15 <= len(code.strip().splitlines()) <= 25
    assert 'prefix="example"' in code
    code = code.replace('prefix="example"', f'prefix="{prefix}"')  # this test's own keys
    client = make_client()
    monkeypatch.setattr(redis.Redis, "from_url", lambda url, **kw: client)
    exec(compile(code, "README example", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out == shown
    assert not list(client.scan_iter(match=f"{prefix}:*")), "the example leaves keys behind"


def command_lines(text: str) -> list[str]:
    """``swarm-redis …`` command lines of code blocks (``$ `` prompts included), synopses left out."""
    found = []
    for line in text.splitlines():
        line = line.strip().removeprefix("$ ")
        if line.startswith("swarm-redis ") and "[" not in line and "..." not in line:
            found.append(line)
    return found


def test_every_command_shown_parses() -> None:
    problems = []
    for page in pages():
        for line in command_lines(page.read_text(encoding="utf-8")):
            argv = shlex.split(line, comments=True)[1:]
            try:
                parse_command_line(argv)
            except SystemExit:
                problems.append(f"{page.name}: {line}")
    assert not problems, "\n".join(problems)


# --- names and paths ----------------------------------------------------------------------------


DOTTED = re.compile(r"(?<![\w.])swarm_redis(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"^\s*from (swarm_redis[\w.]*) import ([\w, ]+)$", re.M)
PATH = re.compile(r"(?<![\w./-])((?:swarm_redis|lua|tests)/[\w./-]*\w)")
#: jobmon's own test tree, named in docs/jobmon.md (not ours).
JOBMON_TREE = ("tests/unit", "tests/integration")


def _moved_path(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 1, -1):
        if ".".join(parts[:i]) in _moved.MOVED_MODULES:
            return ".".join(parts[:i])
    return None


def resolve(name: str) -> str | None:
    """None when ``name`` is a module or a (nested) attribute of one, else why not."""
    parts = name.split(".")
    module: ModuleType | None = None
    i = len(parts)
    while i > 0:
        try:
            module = importlib.import_module(".".join(parts[:i]))
            break
        except ModuleNotFoundError as e:
            if e.name is not None and not e.name.startswith("swarm_redis"):
                # a module of ours that needs an extra (jobmon, prometheus_client): it must exist
                spec = importlib.util.find_spec(".".join(parts[:i]))
                return None if spec is not None else f"{e.name} missing"
            i -= 1
    if module is None:
        return "no such module"
    obj: object = module
    for attr in parts[i:]:
        if not hasattr(obj, attr):
            return f"{'.'.join(parts[:i])} has no {attr!r}"
        obj = getattr(obj, attr)
    return None


def mentioned_names(text: str) -> set[str]:
    """Dotted ``swarm_redis.…`` names, plus the names of ``from swarm_redis… import a, b`` lines."""
    names = set(DOTTED.findall(text))
    for module, imported in FROM_IMPORT.findall(text):
        names.update(f"{module}.{n.strip()}" for n in imported.split(",") if n.strip())
    return names


def _jobmon_installed() -> bool:
    try:
        return importlib.util.find_spec("jobmon.client") is not None
    except ModuleNotFoundError:
        return False


def test_every_dotted_name_resolves() -> None:
    problems = []
    # swarm_redis.jobmon imports jobmon: its names resolve only where jobmon is installed (CI
    # installs it; the README's plain test command does not)
    jobmon = _jobmon_installed()
    for page in pages():
        for name in sorted(mentioned_names(page.read_text(encoding="utf-8"))):
            if not jobmon and name.startswith("swarm_redis.jobmon"):
                continue
            moved = _moved_path(name)
            if moved is not None:
                problems.append(f"{page.name}: {name} (old path of {_moved.MOVED_MODULES[moved]})")
                continue
            why = resolve(name)
            if why is not None:
                problems.append(f"{page.name}: {name}: {why}")
    assert not problems, "\n".join(problems)


def test_every_file_path_exists() -> None:
    problems = []
    for page in pages():
        for path in sorted(set(PATH.findall(page.read_text(encoding="utf-8")))):
            if "*" in path or "<" in path or path.startswith(JOBMON_TREE):
                continue
            if not (ROOT / path).exists():
                problems.append(f"{page.name}: {path}")
    assert not problems, "\n".join(problems)


def test_no_word_of_the_repository_history() -> None:
    banned = re.compile(
        r"\bissue[ -]\d+|\bthe seed\b|\bseed's\b|\bhazard\b|\bDESIGN\.md\b|"
        r"\bswarm_state_api\b|\bpreviously\b(?!_)|\bshared/",
        re.I,
    )
    problems = [
        f"{page.name}:{n}: {line.strip()}"
        for page in pages()
        if page.name not in FREE_TEXT
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1)
        if banned.search(line.replace("num_previously_complete", ""))
    ]
    assert not problems, "\n".join(problems)


# --- the key table ------------------------------------------------------------------------------


def test_key_table_is_generated_from_keys_py_and_lists_run_key_names() -> None:
    hook = load_hook("keytable")
    rows = hook.key_table_rows()
    assert hook.key_table_names(rows, TASK_STATUSES) == list(RUN_KEY_NAMES)
    assert all(kind and content for _, kind, content in rows)
    assert hook.MARKER in (DOCS / "keys.md").read_text(encoding="utf-8")
    table = hook.key_table_markdown(rows)
    assert table.count("\n") == len(rows) + 1
    # no hand copy anywhere: a row of the table is not written out in any page
    for page in pages():
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"^\| `(meta|task|reap_lock)` \| (hash|string) \|", text, re.M), page
