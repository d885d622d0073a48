"""Why the cluster cannot be reached, in one line a person can act on.

aiokafka logs each bootstrap server's failure and then raises a bare "Unable to bootstrap";
a wrong password, an untrusted certificate and a closed port all look alike. So when an
admin client cannot start, each bootstrap server is tried once more on its own to name the
cause and the settings behind it."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
)

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings


class ClusterUnreachable(RuntimeError):
    """No bootstrap server could be used; the message says why and which settings to check."""


def _reason(settings: Settings, server: str, exc: BaseException) -> str:
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return (
            f"{server} refused user {settings.sasl_username!r} ({settings.sasl_mechanism}): "
            "wrong user name or password (FORESIGHT_SASL_USERNAME, FORESIGHT_SASL_PASSWORD)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"{server}: the broker's TLS certificate is not trusted ({exc.verify_message}); "
            "set FORESIGHT_SSL_CAFILE to the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return f"{server}: TLS handshake failed ({exc}); is FORESIGHT_SECURITY_PROTOCOL right?"
    if isinstance(exc, OSError | KafkaConnectionError):
        return f"{server}: no Kafka listener answers ({exc})"
    return f"{server}: {type(exc).__name__}: {exc}"


async def diagnose(settings: Settings) -> str:
    """The reason each bootstrap server fails, joined; empty if one of them now answers."""
    security: dict[str, Any] = aiokafka_kwargs(settings)
    security.pop("bootstrap_servers")
    reasons = []
    for server in settings.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=10_000, **security)
        except Exception as exc:  # every failure is explained, none hidden
            reasons.append(_reason(settings, server, exc))
            continue
        conn.close()
        return ""
    return "; ".join(reasons)


async def started_admin(settings: Settings) -> AIOKafkaAdminClient:
    """A started admin client, or ClusterUnreachable with the reason."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        why = await diagnose(settings) or "it did not answer in time"
        raise ClusterUnreachable(
            f"cannot use the Kafka cluster at {settings.broker} over "
            f"{settings.security_protocol}: {why}"
        ) from None
    return admin
