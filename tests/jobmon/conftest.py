"""pytest finds the jobmon tests' fixtures here; they are written in :mod:`jobmon_fixtures`.

(mypy checks that module: it cannot check two modules named ``conftest`` in one run, so this
one only re-exports and is left out of the mypy run in pyproject.toml.)
"""

from jobmon_fixtures import background_run, jobmon_server

__all__ = ["background_run", "jobmon_server"]
