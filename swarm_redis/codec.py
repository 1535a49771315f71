"""How cached TaskResources are stored: orjson, never pickle, and a stable digest for keys.

Python's ``hash()`` is salted per process, so a cache key shared by replicas must come from a
stable digest of the value: :func:`resource_digest`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from typing import Any, Protocol

import orjson

from swarm_redis.errors import InvalidTypeError


class ResourceCodec(Protocol):
    """Turns cached values into bytes and back. Must raise TypeError for what it cannot encode."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> Any:
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class DefaultCodec:
    """Encodes dicts, dataclasses, and objects with ``to_dict()`` / ``from_dict()``.

    A dataclass or ``to_dict`` object is stored with its class path and rebuilt from it, so the
    class must be importable in every replica.
    """

    def encode(self, value: Any) -> bytes:
        try:
            if isinstance(value, dict):
                return orjson.dumps({"t": "dict", "v": value}, option=orjson.OPT_SORT_KEYS)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                payload = dataclasses.asdict(value)
                doc = {"t": "dataclass", "c": _class_path(type(value)), "v": payload}
                return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
            to_dict = getattr(type(value), "to_dict", None)
            if callable(to_dict) and callable(getattr(type(value), "from_dict", None)):
                doc = {"t": "obj", "c": _class_path(type(value)), "v": value.to_dict()}
                return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            raise InvalidTypeError(
                f"cannot encode resources of type {type(value).__name__}: {exc}"
            ) from None
        raise InvalidTypeError(
            f"cannot encode resources of type {type(value).__name__}: the default codec takes "
            "dicts, dataclasses and objects with to_dict()/from_dict(); pass codec= for others"
        )

    def decode(self, data: bytes) -> Any:
        doc = orjson.loads(data)
        kind = doc["t"]
        if kind == "dict":
            return doc["v"]
        cls = _load_class(doc["c"])
        if kind == "dataclass":
            return cls(**doc["v"])
        return cls.from_dict(doc["v"])


def resource_digest(value: Any, codec: ResourceCodec | None = None) -> int:
    """A stable 63-bit digest of a resources value, the same in every process and host.

    Use it as the ``resource_hash`` argument of ``cache_resources``/``get_cached_resources``
    instead of ``hash()``, which Python salts per process.
    """
    data = (codec or DefaultCodec()).encode(value)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1
