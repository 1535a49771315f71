"""The resource codec decodes data, never code: stored class names are looked up in an
allow-list and never imported or called (issue 10, finding 1)."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from fronts import Front

from swarm_redis import (
    DefaultCodec,
    InvalidInputError,
    InvalidTypeError,
    ResourceDecodeError,
    SwarmRedisError,
    UnknownResourceClassError,
    register_resource_class,
    resource_digest,
)
from swarm_redis.codec import registered_resource_classes


@dataclasses.dataclass
class Res:
    """Registered once for this module (as a jobmon replica registers TaskResources)."""

    num_cores: int
    memory: str
    queue: str = "all.q"


@dataclasses.dataclass
class NotRegistered:
    num_cores: int


class ToDict:
    def __init__(self, cores: int) -> None:
        self.cores = cores

    def to_dict(self) -> dict[str, Any]:
        return {"cores": self.cores}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToDict:
        return cls(d["cores"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToDict) and other.cores == self.cores


@dataclasses.dataclass
class WithDerived:
    """A dataclass with a field computed in __post_init__ (init=False)."""

    cores: int
    double: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.double = 2 * self.cores


class Plain:
    """Neither a dataclass nor to_dict/from_dict: needs converters."""

    def __init__(self, mem: str) -> None:
        self.mem = mem

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plain) and other.mem == self.mem


register_resource_class(Res)
register_resource_class(WithDerived)
register_resource_class(ToDict, name="test.ToDict")
register_resource_class(
    Plain,
    name="test.Plain",
    encode=lambda p: {"mem": p.mem},
    decode=lambda d: Plain(d["mem"]),
)


# --- the codec alone ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{"a": 1, "b": [1, 2]}, Res(2, "4G"), WithDerived(3), ToDict(3), Plain("8G")],
    ids=repr,
)
def test_round_trip_of_registered_values(value: Any) -> None:
    codec = DefaultCodec()
    got = codec.decode(codec.encode(value))
    assert got == value
    assert type(got) is type(value)


def test_stored_names_and_digest_bytes_are_stable() -> None:
    codec = DefaultCodec()
    doc = orjson.loads(codec.encode(Res(2, "4G")))
    assert doc == {
        "t": "dataclass",
        "c": f"{__name__}:Res",
        "v": {"num_cores": 2, "memory": "4G", "queue": "all.q"},
    }
    assert orjson.loads(codec.encode(ToDict(3)))["c"] == "test.ToDict"
    assert orjson.loads(codec.encode(Plain("1G"))) == {
        "t": "obj",
        "c": "test.Plain",
        "v": {"mem": "1G"},
    }
    # the bytes of a dict did not change with the allow-list: digests of stored keys still match
    assert codec.encode({"b": 1, "a": 2}) == b'{"t":"dict","v":{"a":2,"b":1}}'
    assert resource_digest(Res(2, "4G")) == resource_digest(Res(2, "4G"))
    # an unregistered class still has a digest (what encode() would store once registered)
    assert resource_digest(NotRegistered(1)) == resource_digest(NotRegistered(1))
    assert resource_digest(NotRegistered(1)) != resource_digest(NotRegistered(2))


def test_digest_is_the_same_in_another_process(tmp_path: Path) -> None:
    code = (
        "import dataclasses, sys\n"
        "from swarm_redis import register_resource_class, resource_digest\n"
        "@dataclasses.dataclass\n"
        "class Res:\n"
        "    num_cores: int\n"
        "    memory: str\n"
        "    queue: str = 'all.q'\n"
        f"register_resource_class(Res, name='{__name__}:Res')\n"
        "print(resource_digest(Res(2, '4G')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert int(out.stdout) == resource_digest(Res(2, "4G"))


def test_unregistered_class_cannot_be_cached() -> None:
    with pytest.raises(InvalidTypeError, match=r"NotRegistered.*not registered"):
        DefaultCodec().encode(NotRegistered(1))
    with pytest.raises(InvalidTypeError, match="cannot encode resources of type object"):
        DefaultCodec().encode(object())


def test_codec_allow_list_without_the_registry() -> None:
    codec = DefaultCodec(allowed=[NotRegistered])
    data = codec.encode(NotRegistered(4))
    assert codec.decode(data) == NotRegistered(4)
    with pytest.raises(UnknownResourceClassError, match="NotRegistered"):
        DefaultCodec().decode(data)  # another codec does not know it
    named = DefaultCodec(allowed={"nr": NotRegistered})
    assert orjson.loads(named.encode(NotRegistered(4)))["c"] == "nr"
    assert named.decode(named.encode(NotRegistered(4))) == NotRegistered(4)


def test_registration_is_checked() -> None:
    class Bare:
        pass

    with pytest.raises(InvalidInputError, match="encode= and decode="):
        register_resource_class(Bare)
    with pytest.raises(InvalidInputError, match="both encode and decode"):
        register_resource_class(Bare, encode=lambda b: {})
    with pytest.raises(InvalidTypeError, match="takes a class"):
        register_resource_class(Res(1, "1G"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="already registered for"):
        register_resource_class(NotRegistered, name="test.ToDict")
    with pytest.raises(InvalidInputError, match="already registered as"):
        register_resource_class(Res, name="other-name")
    # the same class path again (a module reloaded): the new class object takes the name over
    reloaded = dataclasses.make_dataclass("Res", [("num_cores", int), ("memory", str)])
    reloaded.__module__ = "test_codec_reload"
    register_resource_class(reloaded)
    reloaded_again = dataclasses.make_dataclass("Res", [("num_cores", int)])
    reloaded_again.__module__ = "test_codec_reload"
    register_resource_class(reloaded_again)
    assert registered_resource_classes()["test_codec_reload:Res"] is reloaded_again
    with pytest.raises(InvalidInputError, match="printable"):
        register_resource_class(NotRegistered, name="")
    register_resource_class(Res)  # the same registration again is a no-op
    assert registered_resource_classes()[f"{__name__}:Res"] is Res
    assert "Bare" not in str(registered_resource_classes())


# --- hostile stored values ----------------------------------------------------------------------


def _planted(tmp_path: Path) -> dict[str, bytes]:
    sentinel = tmp_path / "pwned"
    return {
        "popen": orjson.dumps(
            {"t": "dataclass", "c": "subprocess:Popen", "v": {"args": ["touch", str(sentinel)]}}
        ),
        "os-system": orjson.dumps(
            {"t": "obj", "c": "os:system", "v": {"command": f"touch {sentinel}"}}
        ),
        "eval": orjson.dumps(
            {
                "t": "dataclass",
                "c": "builtins:eval",
                "v": {"source": f"open({str(sentinel)!r}, 'w')"},
            }
        ),
        "no-module": orjson.dumps(
            {"t": "dataclass", "c": "no_such_module_xyz:Thing", "v": {"a": 1}}
        ),
        "extra-fields": orjson.dumps(
            {
                "t": "dataclass",
                "c": f"{__name__}:Res",
                "v": {"num_cores": 1, "memory": "1G", "cmd": "rm -rf /"},
            }
        ),
        "missing-fields": orjson.dumps(
            {"t": "dataclass", "c": f"{__name__}:Res", "v": {"num_cores": 1}}
        ),
        "wrong-kind": orjson.dumps({"t": "obj", "c": f"{__name__}:Res", "v": {}}),
        "bad-to-dict": orjson.dumps({"t": "obj", "c": "test.ToDict", "v": {"x": 1}}),
        "not-json": b"\x80\x04\x95binary",
        "not-a-doc": b"[1, 2]",
        "unknown-kind": orjson.dumps({"t": "marshal", "v": {}}),
    }


EXPECTED = {
    "popen": (UnknownResourceClassError, "subprocess:Popen"),
    "os-system": (UnknownResourceClassError, "os:system"),
    "eval": (UnknownResourceClassError, "builtins:eval"),
    "no-module": (UnknownResourceClassError, "no_such_module_xyz:Thing"),
    "extra-fields": (ResourceDecodeError, r"unknown fields \['cmd'\]"),
    "missing-fields": (ResourceDecodeError, r"missing fields \['memory'\]"),
    "wrong-kind": (ResourceDecodeError, "stored as 'obj'"),
    "bad-to-dict": (ResourceDecodeError, "test.ToDict.*KeyError"),
    "not-json": (ResourceDecodeError, "not JSON"),
    "not-a-doc": (ResourceDecodeError, "not a codec document"),
    "unknown-kind": (ResourceDecodeError, "unknown kind 'marshal'"),
}


@pytest.fixture
def no_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything imports by name while it runs."""

    def refuse(name: str, package: str | None = None) -> Any:
        pytest.fail(f"importlib.import_module({name!r}) was called")

    monkeypatch.setattr(importlib, "import_module", refuse)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_codec_refuses_planted_values(case: str, tmp_path: Path, no_imports: None) -> None:
    error, match = EXPECTED[case]
    with pytest.raises(error, match=match) as info:
        DefaultCodec().decode(_planted(tmp_path)[case])
    assert isinstance(info.value, SwarmRedisError)
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["popen", "os-system", "eval", "no-module", "extra-fields"])
def test_planted_values_in_the_run_execute_nothing(
    front: Front, run_id: int, prefix: str, tmp_path: Path, no_imports: None, case: str
) -> None:
    """Planted through the run's real resources key: get and a losing cache_resources refuse."""
    error, match = EXPECTED[case]
    writer = front.state(run_id, prefix=prefix)
    writer.cache_resources(1, {"num_cores": 1})  # the hash exists, as in a live run
    field = "777"  # the field cache_resources(777, ...) uses
    client = front.client()
    planted = _planted(tmp_path)[case]
    key = writer.keys.resources
    if front.is_async:
        front.run(client.hset(key, field, planted))
    else:
        client.hset(key, field, planted)
    reader = front.attach(run_id, prefix=prefix)
    with pytest.raises(error, match=match):
        reader.get_cached_resources(777)
    loser = front.attach(run_id, prefix=prefix)
    with pytest.raises(error, match=match):
        loser.cache_resources(777, Res(1, "1G"))  # first writer wins: the planted value
    assert not (tmp_path / "pwned").exists()
    # nothing was cached locally and the stored value is untouched: the error repeats
    with pytest.raises(error, match=match):
        reader.get_cached_resources(777)
    stored = front.run(client.hget(key, field)) if front.is_async else client.hget(key, field)
    assert stored == planted
    # other resources of the run still decode
    assert reader.get_cached_resources(1) == {"num_cores": 1}


def test_registered_value_crosses_replicas(front: Front, run_id: int, prefix: str) -> None:
    writer = front.state(run_id, prefix=prefix)
    h = resource_digest(Res(4, "8G"))
    assert writer.cache_resources(h, Res(4, "8G")) == Res(4, "8G")
    got = front.attach(run_id, prefix=prefix).get_cached_resources(h)
    assert got == Res(4, "8G") and type(got) is Res
    assert front.attach(run_id, prefix=prefix).cache_resources(h, Res(9, "9G")) == Res(4, "8G")
    with pytest.raises(InvalidTypeError, match="not registered"):
        writer.cache_resources(5, NotRegistered(1))
