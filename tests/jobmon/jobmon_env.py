"""Whether jobmon 3.6 is installed here, and the skip (or, under CI=true, failure) when not."""

from __future__ import annotations

import importlib.util
import os

import pytest

HOW_TO_GET_JOBMON = (
    "jobmon 3.6 is not installed (it is not on the package index): run .ci/run, which installs "
    "it from ../shared/vendor/jobmon-5a5c6cb.tar.gz, or extract that source and run "
    "SETUPTOOLS_SCM_PRETEND_VERSION=3.6.0 pip install --no-deps SRC/jobmon_core "
    "SRC/jobmon_client SRC/jobmon_server (see the README, 'Use with jobmon')"
)


def have_jobmon() -> bool:
    """True when jobmon's client, core and the swarm state are importable."""
    try:
        return importlib.util.find_spec("jobmon.client.swarm.state") is not None
    except ModuleNotFoundError:
        return False


def require_jobmon() -> None:
    """Skip the calling test (module) without jobmon; under CI=true, fail instead."""
    if have_jobmon():
        return
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(HOW_TO_GET_JOBMON, pytrace=False)
    pytest.skip(HOW_TO_GET_JOBMON, allow_module_level=True)
