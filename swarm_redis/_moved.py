"""Module paths from before the subpackages, still importable: each name maps to its new home.

``import swarm_redis.memory`` gives the very module ``swarm_redis.testing.oracle`` (not a copy),
so code written against the flat layout keeps working. New code imports the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

#: old dotted path -> the module that now holds its code
MOVED_MODULES = {
    "swarm_redis.keys": "swarm_redis.engine.keys",
    "swarm_redis.scripts": "swarm_redis.engine.scripts",
    "swarm_redis.commands": "swarm_redis.engine.commands",
    "swarm_redis.core": "swarm_redis.engine.core",
    "swarm_redis.coordination": "swarm_redis.engine.coordination",
    "swarm_redis.transport": "swarm_redis.engine.transport",
    "swarm_redis.validation": "swarm_redis.engine.validation",
    "swarm_redis.views": "swarm_redis.engine.views",
    "swarm_redis.cli": "swarm_redis.ops.cli",
    "swarm_redis.inspect": "swarm_redis.ops.reads",
    "swarm_redis.verify": "swarm_redis.ops.verify",
    "swarm_redis.snapshot": "swarm_redis.ops.snapshot",
    "swarm_redis.events": "swarm_redis.ops.events",
    "swarm_redis.exporter": "swarm_redis.ops.exporter",
    "swarm_redis.render": "swarm_redis.ops.render",
    "swarm_redis.gateway": "swarm_redis.replica.gateway",
    "swarm_redis.embedded": "swarm_redis.demo.embedded",
    "swarm_redis.sim": "swarm_redis.demo.sim",
    "swarm_redis.simwire": "swarm_redis.demo.sim.wire",
    "swarm_redis.memory": "swarm_redis.testing.oracle",
}


class _Alias(importlib.abc.Loader):
    """Loads an old path by importing the new one and putting that module in its place."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        # The import system reads sys.modules again after exec_module, so the caller gets
        # the real module; its own __spec__ and __name__ stay those of the new path.
        sys.modules[module.__name__] = importlib.import_module(self.target)


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED_MODULES.get(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
