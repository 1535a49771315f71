"""TLS and ACL: a private redis-server serving only TLS (a self-signed certificate made here) with
an ACL user restricted to one key prefix, reached with a ``rediss://user:pass@...`` URL from
both fronts."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import redis.asyncio
from servers import missing_binaries, skip_or_fail

from swarm_redis import AsyncRedisSwarmState, RedisSwarmState, StateUpdate, TaskRecord
from swarm_redis.demo.embedded import EmbeddedRedisError
from swarm_redis.demo.redis_server import RedisProcess, start_redis_server

pytestmark = pytest.mark.real

USER = "swarm"
PASSWORD = "s3cret-Pa55"
PREFIX = "swtls"
#: The user the state runs as: only keys under PREFIX, no @dangerous commands (CONFIG, DEBUG,
#: SHUTDOWN, KEYS, FLUSHALL ...). An admin user is kept for the server's own start and stop.
USER_RULES = ["on", f">{PASSWORD}", f"~{PREFIX}:*", "&*", "+@all", "-@dangerous"]
ADMIN, ADMIN_PASSWORD = "admin", "adm1n-Pa55"


def make_cert_with_cryptography(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key, with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_cert_with_openssl(directory: Path) -> tuple[Path, Path]:
    """The same with the `openssl` command line tool."""
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert_path, key_path


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate: `cryptography` if importable, else `openssl`, else skip."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("TLS test needs the cryptography package or the openssl CLI")
        return make_cert_with_openssl(directory)
    return make_cert_with_cryptography(directory)


def tls_url(port: int, ca: Path, user: str = USER, password: str = PASSWORD) -> str:
    """The documented URL form: rediss://user:pass@host:port/db?ssl_cert_reqs=...&ssl_ca_certs=..."""
    return (
        f"rediss://{quote(user)}:{quote(password)}@127.0.0.1:{port}/0"
        f"?ssl_cert_reqs=required&ssl_ca_certs={quote(str(ca))}"
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisProcess, Path]]:
    """A TLS-only redis-server with the default user off and one ACL user; and its CA file."""
    why = missing_binaries("redis-server")
    if why:
        skip_or_fail(f"TLS test needs redis-server: {why}")
    work = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(work)
    args = [
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
        "--user",
        "default",
        "off",
        "--user",
        USER,
        *USER_RULES,
        "--user",
        ADMIN,
        "on",
        f">{ADMIN_PASSWORD}",
        "~*",
        "&*",
        "+@all",
    ]
    client_kwargs: dict[str, Any] = {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": str(cert),
        "username": ADMIN,
        "password": ADMIN_PASSWORD,
    }
    try:
        server = start_redis_server(
            args, workdir=str(work / "server"), tls=True, client_kwargs=client_kwargs
        )
    except EmbeddedRedisError as e:
        text = str(e).lower()
        if "tls" in text and ("support" in text or "bad directive" in text):
            pytest.skip(f"this redis-server was built without TLS: {e}")
        raise
    try:
        yield server, cert
    finally:
        server.stop()


def test_url_with_tls_and_acl_user_runs_a_state_update(
    tls_server: tuple[RedisProcess, Path], run_id: int
) -> None:
    server, ca = tls_server
    client = redis.Redis.from_url(tls_url(server.port, ca), protocol=3)
    try:
        assert client.acl_whoami() == b"swarm"
        st = RedisSwarmState(1, run_id, 1, redis=client, prefix=PREFIX)
        a, b = TaskRecord(1), TaskRecord(2, num_upstreams=1)
        a.downstream_swarm_tasks = {b}
        st.add_tasks([a, b])
        result = st.apply(StateUpdate(task_statuses={1: "D"}))
        assert result.ready == [b]
        assert st.dequeue_task() is b
        assert st.get_done_count() == 1
    finally:
        client.close()


def test_async_front_over_tls(tls_server: tuple[RedisProcess, Path], run_id: int) -> None:
    server, ca = tls_server

    async def scenario() -> tuple[int, list[int]]:
        client = redis.asyncio.Redis.from_url(tls_url(server.port, ca), protocol=3)
        try:
            st = await AsyncRedisSwarmState.create(1, run_id, 1, redis=client, prefix=PREFIX)
            await st.add_tasks([TaskRecord(1), TaskRecord(2)])
            await st.enqueue_tasks([TaskRecord(1), TaskRecord(2)])
            got = [t.task_id for t in await st.dequeue_tasks(5)]
            return await st.get_ready_to_run_count(), got
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == (0, [1, 2])


def test_acl_refuses_wrong_password_and_foreign_prefix(
    tls_server: tuple[RedisProcess, Path], run_id: int
) -> None:
    server, ca = tls_server
    wrong = redis.Redis.from_url(tls_url(server.port, ca, password="nope"), protocol=3)
    try:
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
    finally:
        wrong.close()
    anonymous = redis.Redis.from_url(
        f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}",
        protocol=3,
    )
    try:
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            anonymous.ping()
    finally:
        anonymous.close()
    client = redis.Redis.from_url(tls_url(server.port, ca), protocol=3)
    try:
        # The user may only touch keys under PREFIX: a run under another prefix is refused.
        with pytest.raises(redis.exceptions.NoPermissionError):
            RedisSwarmState(1, run_id, 1, redis=client, prefix="elsewhere")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_get("maxmemory-policy")  # @dangerous is off for this user
    finally:
        client.close()


def test_acl_user_reloads_scripts_after_flush(
    tls_server: tuple[RedisProcess, Path], run_id: int
) -> None:
    """NOSCRIPT recovery (SCRIPT LOAD) needs no more than the restricted user's rights."""
    server, ca = tls_server
    client = redis.Redis.from_url(tls_url(server.port, ca), protocol=3)
    admin = server.client()
    try:
        st = RedisSwarmState(1, run_id, 1, redis=client, prefix=PREFIX)
        st.add_tasks([TaskRecord(1)])
        admin.script_flush()
        assert st.update_task_status(1, "Q") is True
        assert st.get_task(1).status == "Q"
    finally:
        admin.close()
        client.close()


def test_tls_is_required(tls_server: tuple[RedisProcess, Path]) -> None:
    """The server has no plain-text port: a redis:// URL on the TLS port cannot talk to it."""
    server, _ca = tls_server
    plain = redis.Redis.from_url(
        f"redis://{USER}:{PASSWORD}@127.0.0.1:{server.port}/0",
        protocol=3,
        socket_timeout=2,
        socket_connect_timeout=2,
    )
    try:
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            plain.ping()
    finally:
        plain.close()
