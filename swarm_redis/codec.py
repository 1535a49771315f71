"""How cached TaskResources are stored: JSON (orjson) only, and a stable digest for keys.

A stored value is JSON: ``{"t": "dict", "v": {...}}`` for a plain dict, or
``{"t": "dataclass" | "obj", "c": NAME, "v": {...}}`` for an instance of a class. Decoding is
data, never code: NAME is looked up in an allow-list of classes the application registered
(:func:`register_resource_class`, once per process, or ``DefaultCodec(allowed=...)``), and a
name that is not there raises :class:`~swarm_redis.errors.UnknownResourceClassError`. Nothing
named by stored text is ever imported or called: the value in Redis may have been written by
anyone holding a replica's credentials, or by ``swarm-redis import``.

NAME is the registered name, by default ``module:qualname``: the same in every process and on
every host, so :func:`resource_digest` (a SHA-256 of the encoded bytes) is too. Python's
``hash()`` is salted per process, so a cache key shared by replicas must come from that digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, cast

import orjson

from swarm_redis.errors import (
    InvalidInputError,
    InvalidTypeError,
    ResourceDecodeError,
    UnknownResourceClassError,
)

__all__ = [
    "DefaultCodec",
    "ResourceClass",
    "ResourceCodec",
    "register_resource_class",
    "registered_resource_classes",
    "resource_digest",
]

#: Longest registered class name; a stored name longer than this is malformed.
MAX_CLASS_NAME = 200


class ResourceCodec(Protocol):
    """Turns cached values into bytes and back. Must raise TypeError for what it cannot encode."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


@dataclasses.dataclass(frozen=True)
class ResourceClass:
    """A class allowed in the resource cache, under its stored name.

    Attributes:
        cls: The class.
        name: The name stored with its instances (stable across processes and hosts).
        kind: ``"dataclass"``, ``"obj"`` (to_dict/from_dict) or ``"custom"`` (converters).
        to_dict: Custom converter instance -> JSON-able dict (kind "custom" only).
        from_dict: Custom converter dict -> instance (kind "custom" only).
    """

    cls: type
    name: str
    kind: str
    to_dict: Callable[[Any], Mapping[str, Any]] | None = None
    from_dict: Callable[[dict[str, Any]], Any] | None = None


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _has_to_from_dict(cls: type) -> bool:
    return callable(getattr(cls, "to_dict", None)) and callable(getattr(cls, "from_dict", None))


def _make_entry(
    cls: Any,
    name: str | None,
    encode: Callable[[Any], Mapping[str, Any]] | None,
    decode: Callable[[dict[str, Any]], Any] | None,
) -> ResourceClass:
    """Validate one registration; nothing is registered if this raises."""
    if not isinstance(cls, type):
        raise InvalidTypeError(f"register_resource_class takes a class, not {type(cls).__name__}")
    if (encode is None) != (decode is None):
        raise InvalidInputError(
            f"register_resource_class({cls.__qualname__}): give both encode and decode, or neither"
        )
    for what, fn in (("encode", encode), ("decode", decode)):
        if fn is not None and not callable(fn):
            raise InvalidTypeError(f"register_resource_class: {what} must be callable")
    if name is None:
        name = _class_path(cls)
    if not isinstance(name, str):
        raise InvalidTypeError(f"resource class name must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_CLASS_NAME or not name.isprintable():
        raise InvalidInputError(
            f"resource class name {name!r} must be 1..{MAX_CLASS_NAME} printable characters"
        )
    if encode is not None:
        return ResourceClass(cls, name, "custom", encode, decode)
    if dataclasses.is_dataclass(cls):
        return ResourceClass(cls, name, "dataclass")
    if _has_to_from_dict(cls):
        return ResourceClass(cls, name, "obj")
    raise InvalidInputError(
        f"register_resource_class({cls.__qualname__}): the class is neither a dataclass nor has "
        "to_dict()/from_dict(); pass encode= and decode= converters"
    )


class _Registry:
    """Classes allowed in the resource cache, by class and by stored name (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_class: dict[type, ResourceClass] = {}
        self.by_name: dict[str, ResourceClass] = {}

    def add(self, entry: ResourceClass) -> None:
        with self._lock:
            known = self.by_class.get(entry.cls)
            if known is not None and known.name != entry.name:
                raise InvalidInputError(
                    f"resource class {_class_path(entry.cls)} is already registered as "
                    f"{known.name!r}; a class has one stored name"
                )
            other = self.by_name.get(entry.name)
            if (
                other is not None
                and other.cls is not entry.cls
                and _class_path(other.cls) != _class_path(entry.cls)
            ):
                raise InvalidInputError(
                    f"resource class name {entry.name!r} is already registered for "
                    f"{_class_path(other.cls)}"
                )
            # new, the same again, new converters, or the same class path reloaded: the last wins
            if other is not None:
                self.by_class.pop(other.cls, None)
            self.by_class[entry.cls] = entry
            self.by_name[entry.name] = entry


_REGISTRY = _Registry()


def register_resource_class(
    cls: type,
    *,
    name: str | None = None,
    encode: Callable[[Any], Mapping[str, Any]] | None = None,
    decode: Callable[[dict[str, Any]], Any] | None = None,
) -> type:
    """Allow ``cls`` in the resource cache of every state in this process; returns ``cls``.

    Register every class your replicas cache (jobmon's TaskResources, say) at import time in
    every replica: a replica decodes only registered classes and never imports what a stored
    value names. Registering the same class the same way again is a no-op.

    Args:
        cls: A dataclass, a class with ``to_dict()`` and a ``from_dict()`` classmethod, or any
            class together with ``encode``/``decode``.
        name: The name stored with its instances (default ``module:qualname``). Keep it the same
            on every host; changing it changes :func:`resource_digest` of its values.
        encode: Converter instance -> JSON-able dict, for classes of the third kind.
        decode: Converter dict -> instance, the inverse of ``encode``.

    Raises:
        InvalidInputError: The class cannot be stored as given, or the name or class is already
            registered differently.
        InvalidTypeError: ``cls`` is not a class, or a converter is not callable.
    """
    _REGISTRY.add(_make_entry(cls, name, encode, decode))
    return cls


def registered_resource_classes() -> dict[str, type]:
    """Stored name -> class, for every class registered in this process."""
    with _REGISTRY._lock:
        return {name: entry.cls for name, entry in _REGISTRY.by_name.items()}


def _check_fields(entry: ResourceClass, payload: dict[str, Any]) -> None:
    """Refuse a stored dataclass payload whose fields do not match the registered class."""
    every = dataclasses.fields(entry.cls)
    fields = [f for f in every if f.init]
    extra = sorted(set(payload) - {f.name for f in every})
    missing = sorted(
        f.name
        for f in fields
        if f.name not in payload
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"unknown fields {extra[:10]}")
        if missing:
            parts.append(f"missing fields {missing[:10]}")
        raise ResourceDecodeError(
            f"cached resources of class {entry.name!r} do not match it: {', '.join(parts)}"
        )


class DefaultCodec:
    """Encodes dicts and instances of registered classes; decodes without importing anything.

    Args:
        allowed: Classes this codec accepts besides the process-wide registry: classes (stored
            as ``module:qualname``) or a mapping stored name -> class. Each must be a dataclass
            or have ``to_dict()``/``from_dict()``.
    """

    def __init__(self, allowed: Iterable[type] | Mapping[str, type] | None = None) -> None:
        self._by_class: dict[type, ResourceClass] = {}
        self._by_name: dict[str, ResourceClass] = {}
        if allowed is None:
            return
        pairs: list[tuple[str | None, type]]
        if isinstance(allowed, Mapping):
            pairs = [(name, cls) for name, cls in allowed.items()]
        else:
            pairs = [(None, cls) for cls in allowed]
        for name, cls in pairs:
            entry = _make_entry(cls, name, None, None)
            if entry.name in self._by_name and self._by_name[entry.name].cls is not cls:
                raise InvalidInputError(f"allowed names {entry.name!r} twice")
            self._by_class[entry.cls] = entry
            self._by_name[entry.name] = entry

    def _entry_for_class(self, cls: type) -> ResourceClass | None:
        return self._by_class.get(cls) or _REGISTRY.by_class.get(cls)

    def _entry_for_name(self, name: str) -> ResourceClass | None:
        return self._by_name.get(name) or _REGISTRY.by_name.get(name)

    def _document(self, value: Any, *, registered_only: bool) -> dict[str, Any]:
        if isinstance(value, dict):
            return {"t": "dict", "v": value}
        cls = type(value)
        entry = self._entry_for_class(cls)
        if entry is None and not registered_only:
            # for digests only: the name an unregistered class would be stored under
            if dataclasses.is_dataclass(cls):
                entry = ResourceClass(cls, _class_path(cls), "dataclass")
            elif _has_to_from_dict(cls):
                entry = ResourceClass(cls, _class_path(cls), "obj")
        if entry is None:
            if dataclasses.is_dataclass(cls) or _has_to_from_dict(cls):
                raise InvalidTypeError(
                    f"cannot cache resources of class {_class_path(cls)}: it is not registered; "
                    "call swarm_redis.register_resource_class() for it in every replica"
                )
            raise InvalidTypeError(
                f"cannot encode resources of type {cls.__name__}: the default codec takes dicts "
                "and registered classes (dataclasses, to_dict()/from_dict(), or with converters); "
                "pass codec= for others"
            )
        if entry.kind == "dataclass":
            return {"t": "dataclass", "c": entry.name, "v": dataclasses.asdict(value)}
        if entry.kind == "obj":
            payload = value.to_dict()
        else:
            assert entry.to_dict is not None
            payload = entry.to_dict(value)
        if not isinstance(payload, Mapping):
            raise InvalidTypeError(
                f"cannot encode resources of class {entry.name}: its to_dict gave "
                f"{type(payload).__name__}, not a dict"
            )
        return {"t": "obj", "c": entry.name, "v": dict(payload)}

    def _dumps(self, value: Any, *, registered_only: bool) -> bytes:
        doc = self._document(value, registered_only=registered_only)
        try:
            return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            raise InvalidTypeError(
                f"cannot encode resources of type {type(value).__name__}: {exc}"
            ) from None

    def encode(self, value: Any) -> bytes:
        """The stored bytes of ``value``; InvalidTypeError (a TypeError) if it cannot be stored."""
        return self._dumps(value, registered_only=True)

    def canonical(self, value: Any) -> bytes:
        """The bytes :meth:`encode` gives once the class is registered (used for digests)."""
        return self._dumps(value, registered_only=False)

    def decode(self, data: bytes) -> Any:
        """The value stored as ``data``: a dict, or an instance of a registered class.

        Raises:
            UnknownResourceClassError: The value names a class that is not registered.
            ResourceDecodeError: The bytes are not a value this codec wrote, or the fields do
                not match the registered class.
        """
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ResourceDecodeError(f"cached resources are not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("v"), dict):
            raise ResourceDecodeError(
                f"cached resources are not a codec document: {_excerpt(data)}"
            )
        kind = doc.get("t")
        payload: dict[str, Any] = doc["v"]
        if kind == "dict":
            return payload
        if kind not in ("dataclass", "obj"):
            raise ResourceDecodeError(f"cached resources of unknown kind {kind!r}")
        name = doc.get("c")
        if not isinstance(name, str) or not name or len(name) > MAX_CLASS_NAME:
            raise ResourceDecodeError(f"cached resources with a bad class name: {_excerpt(data)}")
        entry = self._entry_for_name(name)
        if entry is None:
            raise UnknownResourceClassError(name)
        stored_kind = "dataclass" if entry.kind == "dataclass" else "obj"
        if kind != stored_kind:
            raise ResourceDecodeError(
                f"cached resources of class {name!r} are stored as {kind!r}, expected "
                f"{stored_kind!r}"
            )
        try:
            if entry.kind == "dataclass":
                _check_fields(entry, payload)
                init = {f.name for f in dataclasses.fields(entry.cls) if f.init}
                # fields with init=False are stored by asdict() and rebuilt by the class itself
                return entry.cls(**{k: v for k, v in payload.items() if k in init})
            if entry.kind == "obj":
                return cast(Any, entry.cls).from_dict(payload)
            assert entry.from_dict is not None
            return entry.from_dict(payload)
        except ResourceDecodeError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ResourceDecodeError(
                f"cached resources of class {name!r} do not match it: {type(exc).__name__} {exc}"
            ) from None


def _excerpt(data: bytes, limit: int = 80) -> str:
    text = bytes(data[:limit]).decode("utf-8", "replace")
    return repr(text + ("..." if len(data) > limit else ""))


def resource_digest(value: Any, codec: ResourceCodec | None = None) -> int:
    """A stable 63-bit digest of a resources value, the same in every process and host.

    Use it as the ``resource_hash`` argument of ``cache_resources``/``get_cached_resources``
    instead of ``hash()``, which Python salts per process. With the default codec it does not
    need the class to be registered (it hashes what :meth:`DefaultCodec.encode` would store).
    """
    if codec is None or isinstance(codec, DefaultCodec):
        data = (codec or DefaultCodec()).canonical(value)
    else:
        data = codec.encode(value)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1
