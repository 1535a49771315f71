"""docker-compose.yml, checked without Docker: services, dependencies, Redis flags, and every
`swarm-redis ...` / `python -m swarm_redis...` command against the real argument parsers."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarm_redis.ops.cli import build_parser
from swarm_redis.replica.process import build_parser as replica_parser

ROOT = Path(__file__).resolve().parents[1]
RUN = "1"
PREFIX = "swarm"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    assert isinstance(cmd, list), f"command should be a list (exec form): {cmd!r}"
    return [str(part) for part in cmd]


def _parse(cmd: list[str]) -> tuple[str, argparse.Namespace]:
    """Parse a swarm-redis command with the real parser; ("cli" | "replica", namespace)."""
    try:
        if cmd[0] == "swarm-redis":
            return "cli", build_parser().parse_args(cmd[1:])
        if cmd[:3] == ["python", "-m", "swarm_redis"]:
            return "cli", build_parser().parse_args(cmd[3:])
        if cmd[:3] == ["python", "-m", "swarm_redis.replica"]:
            return "replica", replica_parser().parse_args(cmd[3:])
    except SystemExit as e:
        pytest.fail(f"{' '.join(cmd)!r} does not parse (exit {e.code})")
    raise AssertionError(f"not a swarm_redis command: {cmd!r}")


def _ours(service: dict[str, Any]) -> bool:
    cmd = service.get("command")
    return isinstance(cmd, list) and (
        cmd[0] == "swarm-redis"
        or (cmd[:2] == ["python", "-m"] and cmd[2].startswith("swarm_redis"))
    )


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    assert isinstance(deps, dict), "depends_on should name a condition for each dependency"
    return {name: spec["condition"] for name, spec in deps.items()}


def _flags(cmd: list[str]) -> dict[str, str]:
    """`--name value` pairs of a redis-server command line."""
    return {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}


def test_expected_services(services: dict[str, dict[str, Any]]) -> None:
    for name in (
        "redis",
        "seed",
        "sim",
        "replica",
        "watch",
        "verify",
        "exporter",
        "cluster-create",
    ):
        assert name in services
    nodes = [n for n, s in services.items() if "--cluster-enabled" in s.get("command", [])]
    assert len(nodes) >= 3


def test_redis_is_pinned_durable_and_healthchecked(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-\w+)?", redis["image"]), redis["image"]
    cmd = _command(redis)
    assert cmd[0] == "redis-server"
    flags = _flags(cmd)
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--appendonly"] == "yes"
    test = redis["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "redis-cli" in " ".join(test)
    assert "ping" in " ".join(test)


def test_app_services_use_the_local_image(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    ours = {n: s for n, s in services.items() if _ours(s)}
    assert {"seed", "sim", "replica", "watch"} <= set(ours)
    for name, service in ours.items():
        assert service.get("build") == ".", name
        env = service.get("environment", {})
        if "cluster" not in service.get("profiles", []):
            assert env.get("REDIS_URL") == "redis://redis:6379/0", name
        # the simulated server's key comes from the environment, required, never from the file
        assert re.fullmatch(
            r"\$\{SWARM_SIM_AUTHKEY:\?[^$}]+\}", env.get("SWARM_SIM_AUTHKEY", "")
        ), name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+", dockerfile, re.M)
    assert re.search(r"pip install .*'\.\[", dockerfile)
    (extras,) = re.findall(r"pip install '\.\[([a-z,]+)\]'", dockerfile)
    assert "prometheus" in extras.split(",")  # the image can serve the exporter


def test_every_command_parses(services: dict[str, dict[str, Any]]) -> None:
    parsed = 0
    for service in services.values():
        if _ours(service):
            _parse(_command(service))
            parsed += 1
    assert parsed >= 5


def test_services_work_on_the_same_run(services: dict[str, dict[str, Any]]) -> None:
    _, seed = _parse(_command(services["seed"]))
    assert (seed.command, seed.role, str(seed.run), seed.prefix) == ("demo", "seed", RUN, PREFIX)
    _, sim = _parse(_command(services["sim"]))
    assert (sim.command, sim.role, str(sim.run), sim.prefix) == ("demo", "sim", RUN, PREFIX)
    kind, replica = _parse(_command(services["replica"]))
    assert kind == "replica"
    assert (str(replica.run), replica.prefix) == (RUN, PREFIX)
    host, _, port = replica.sim.rpartition(":")
    assert host == "sim" and port == sim.listen.rpartition(":")[2]
    assert sim.listen.startswith("0.0.0.0:")  # reachable from the replica containers
    _, watch = _parse(_command(services["watch"]))
    assert (watch.command, str(watch.run), watch.prefix) == ("watch", RUN, PREFIX)


def test_dependencies_wait_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dep, condition in _depends(service).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if dep in ("redis", "sim") or "--cluster-enabled" in services[dep].get("command", []):
                assert condition == "service_healthy", (name, dep)
                assert "healthcheck" in services[dep], dep
    for name in ("seed", "sim", "replica", "watch", "verify"):
        assert _depends(services[name])["redis"] == "service_healthy"
    replica = _depends(services["replica"])
    assert replica["sim"] == "service_healthy"
    assert replica["seed"] == "service_completed_successfully"
    assert _depends(services["sim"])["seed"] == "service_completed_successfully"


def test_replica_service_scales(services: dict[str, dict[str, Any]]) -> None:
    replica = services["replica"]
    assert "container_name" not in replica
    assert "ports" not in replica
    assert replica.get("deploy", {}).get("replicas", 1) >= 2
    assert replica.get("restart") == "on-failure"  # a run that is final ends them for good


def test_watch_is_one_shot(services: dict[str, dict[str, Any]]) -> None:
    assert services["watch"].get("restart", "no") == "no"
    assert services["seed"].get("restart", "no") == "no"


def test_cluster_profile(services: dict[str, dict[str, Any]]) -> None:
    nodes = {n: s for n, s in services.items() if "--cluster-enabled" in s.get("command", [])}
    addresses = []
    for name, node in nodes.items():
        assert node.get("profiles") == ["cluster"], name
        assert node["image"] == services["redis"]["image"]
        flags = _flags(_command(node))
        assert flags["--cluster-enabled"] == "yes"
        assert flags["--maxmemory-policy"] == "noeviction"
        assert flags["--appendonly"] == "yes"
        assert "healthcheck" in node
        address = flags["--cluster-announce-ip"]
        assert node["networks"]["cluster"]["ipv4_address"] == address
        addresses.append(f"{address}:6379")
    create = services["cluster-create"]
    assert create.get("profiles") == ["cluster"]
    script = " ".join(_command(create))
    assert "redis-cli --cluster create" in script
    for address in addresses:
        assert address in script
    assert "--cluster-yes" in script
    assert set(_depends(create)) == set(nodes)
    assert set(_depends(create).values()) == {"service_healthy"}
    # `--profile cluster up` starts the cluster and none of the demo.
    started = _started_by_up(services, {"cluster"})
    assert set(nodes) | {"cluster-create", "cluster-runs"} <= started
    assert not started & {"seed", "sim", "replica", "watch", "verify", "exporter"}


def _started_by_up(services: dict[str, dict[str, Any]], profiles: set[str]) -> set[str]:
    """The services `docker compose [--profile P ...] up` starts: those without a profile or
    with an active one. Compose refuses to start when one of them depends on a disabled
    service, so that is checked here too."""
    started = {
        n for n, s in services.items() if not s.get("profiles") or profiles & set(s["profiles"])
    }
    for name in started:
        missing = set(_depends(services[name])) - started
        assert not missing, f"{name} depends on {missing}, not started with profiles {profiles}"
    return started


def _run_starts(services: dict[str, dict[str, Any]], name: str) -> None:
    """`docker compose run NAME` enables NAME's profiles, not its dependencies' ones: each
    dependency must be always on or share a profile with it."""
    own = set(services[name].get("profiles", []))
    for dep in _depends(services[name]):
        theirs = set(services[dep].get("profiles", []))
        assert not theirs or theirs & own, f"`run {name}` cannot start {dep} (profiles {theirs})"


def test_profiles(services: dict[str, dict[str, Any]]) -> None:
    assert _started_by_up(services, set()) == {"redis"}  # a plain `up`: Redis only, no watch
    demo = _started_by_up(services, {"demo"})
    assert demo == {"redis", "seed", "sim", "replica"}  # the live view is asked for, never implied
    for name in ("watch", "verify", "exporter"):
        assert name not in demo and services[name].get("profiles"), name
        _run_starts(services, name)
    exporter = services["exporter"]
    _, args = _parse(_command(exporter))
    assert args.command == "exporter" and args.prefix == PREFIX
    assert exporter["ports"] == [f"127.0.0.1:${{SWARM_EXPORTER_PORT:-9108}}:{args.port}"]


def test_redis_host_port_is_a_variable_with_a_default(services: dict[str, dict[str, Any]]) -> None:
    (port,) = services["redis"]["ports"]
    match = re.fullmatch(r"127\.0\.0\.1:\$\{SWARM_REDIS_PORT:-(\d+)\}:6379", port)
    assert match, port
    assert match.group(1) != "6379"  # the default leaves a local Redis on 6379 alone
    header = (ROOT / "docker-compose.yml").read_text().split("services:")[0]
    assert "SWARM_REDIS_PORT=" in header  # the override is documented where it is used


def test_no_secret_in_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"SWARM_SIM_AUTHKEY:\s*['\"]?[0-9a-fA-F]{16,}", text)
    assert not re.search(r"\b[0-9a-f]{32,}\b", text)  # no hex key anywhere


def test_nothing_listens_on_a_public_address(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)  # published on loopback only
    assert "ports" not in services["sim"]  # the compose network only
    # outside compose, every listener defaults to loopback
    demo = build_parser().parse_args(["demo", "--role", "sim", "--run", "1"])
    assert demo.listen.startswith("127.0.0.1:")
