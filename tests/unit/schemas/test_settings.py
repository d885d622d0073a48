"""Settings from the environment, and the one mapping to Kafka credentials (table-driven)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.kafka_security import aiokafka_kwargs, faust_credentials
from schemas.settings import Settings, SettingsError


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA/cert and key made with openssl, for the SSL/mTLS rows."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return {"ca": d / "cert.pem", "cert": d / "cert.pem", "key": d / "key.pem"}


def test_reads_foresight_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_BROKER", "kafka://a:1;b:2")
    monkeypatch.setenv("FORESIGHT_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("FORESIGHT_STORE", "memory://")
    monkeypatch.setenv("FORESIGHT_REGISTRY", "/tmp/reg")
    monkeypatch.setenv("FORESIGHT_BATCH_SIZE", "64")
    s = Settings()
    assert s.bootstrap_servers == ["a:1", "b:2"]
    assert s.topic("events") == "acme.events"
    assert s.topic("models.control") == "acme.models.control"
    assert s.store == "memory://"
    assert s.registry == Path("/tmp/reg")
    assert s.batch_size == 64


def test_frozen_and_unknown_topic() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.batch_size = 3  # type: ignore[misc]
    with pytest.raises(KeyError):
        s.topic("nope")


def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="batch_size"):
        Settings()


def test_secrets_never_printed() -> None:
    s = Settings(security_protocol="SASL_SSL", sasl_username="bob", sasl_password="hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert "hunter2" not in repr(faust_credentials(s))


def test_sasl_without_tls_refused_unless_dev() -> None:
    with pytest.raises((SettingsError, ValidationError), match="unencrypted"):
        Settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    s = Settings(
        security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p", dev_mode=True
    )
    assert aiokafka_kwargs(s)["security_protocol"] == "SASL_PLAINTEXT"


def test_sasl_needs_credentials() -> None:
    with pytest.raises((SettingsError, ValidationError), match="SASL_USERNAME"):
        Settings(security_protocol="SASL_SSL")


# protocol row → the aiokafka keyword arguments it must produce
CASES = [
    ("plaintext", {}, {"security_protocol": "PLAINTEXT"}, False),
    ("ssl", {"security_protocol": "SSL", "ssl_cafile": "ca"}, {"security_protocol": "SSL"}, True),
    (
        "mtls",
        {
            "security_protocol": "SSL",
            "ssl_cafile": "ca",
            "ssl_certfile": "cert",
            "ssl_keyfile": "key",
        },
        {"security_protocol": "SSL"},
        True,
    ),
    (
        "scram-512",
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "alice",
            "sasl_password": "s3cret",
            "ssl_cafile": "ca",
        },
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "alice",
            "sasl_plain_password": "s3cret",
        },
        True,
    ),
    (
        "scram-256",
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "alice",
            "sasl_password": "s3cret",
        },
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "alice",
            "sasl_plain_password": "s3cret",
        },
        True,
    ),
]


@pytest.mark.parametrize(
    ("name", "fields", "expected", "has_ssl"), CASES, ids=[c[0] for c in CASES]
)
def test_credentials_mapping(name, fields, expected, has_ssl, tls_files) -> None:
    resolved = {
        k: (tls_files[v] if k.startswith("ssl_") and k != "ssl_key_password" else v)
        for k, v in fields.items()
    }
    kwargs = aiokafka_kwargs(Settings(broker="kafka://h:9093", **resolved))
    assert kwargs["bootstrap_servers"] == ["h:9093"]
    for key, value in expected.items():
        assert kwargs[key] == value, key
    assert isinstance(kwargs.get("ssl_context"), ssl.SSLContext) == has_ssl
    if has_ssl:
        assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_mtls_needs_key(tls_files) -> None:
    s = Settings(security_protocol="SSL", ssl_certfile=tls_files["cert"])
    with pytest.raises(SettingsError, match="KEYFILE"):
        aiokafka_kwargs(s)
