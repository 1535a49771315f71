"""A test's subprocess that may run in the background (started early by tests/jobmon/conftest.py).

Its output goes to files, not pipes: nobody reads a pipe while it runs, and a full pipe would
stop it.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


class BackgroundProcess:
    """``cmd`` started at once; :meth:`result` waits for it, :meth:`stop` ends it."""

    def __init__(self, cmd: list[str], *, env: dict[str, str], cwd: Path | None = None) -> None:
        self.out = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 -- stop()
        self.err = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.out, stderr=self.err)

    def result(self, timeout_s: float) -> tuple[int, str, str]:
        """Wait for the process: exit status, stdout, stderr."""
        try:
            self.proc.wait(timeout=timeout_s)
            self.out.seek(0)
            self.err.seek(0)
            return self.proc.returncode, self.out.read(), self.err.read()
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill the process if it still runs; close its output files."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()
