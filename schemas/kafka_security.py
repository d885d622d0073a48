"""Maps the Kafka security settings to client credentials, in exactly one place.

Faust and every plain aiokafka client (bench, replay, trainer) get their TLS/SASL configuration
from :func:`faust_credentials`; the aiokafka keyword form is derived from it by Faust's own
converter, so the two can never disagree.
"""

from __future__ import annotations

import ssl
from typing import Any

from schemas.settings import Settings, SettingsError


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
    )
    if settings.ssl_certfile:
        if not settings.ssl_keyfile:
            raise SettingsError("mTLS needs FORESIGHT_SSL_KEYFILE beside FORESIGHT_SSL_CERTFILE")
        password = settings.ssl_key_password
        context.load_cert_chain(
            str(settings.ssl_certfile),
            str(settings.ssl_keyfile),
            password.get_secret_value() if password else None,
        )
    return context


def faust_credentials(settings: Settings) -> Any:
    """Faust credentials for the configured protocol (``None`` for PLAINTEXT)."""
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(_ssl_context(settings))
    assert settings.sasl_password is not None  # Settings validation guarantees it
    return SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        mechanism=settings.sasl_mechanism,
        ssl_context=_ssl_context(settings) if protocol == "SASL_SSL" else None,
    )


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``: servers plus security."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return {
        "bootstrap_servers": settings.bootstrap_servers,
        **credentials_to_aiokafka_auth(faust_credentials(settings)),
    }


def topic_reader(settings: Settings, *topics: str, **options: Any) -> Any:
    """An aiokafka consumer outside any consumer group that reads ``topics`` (or what is
    assigned to it later) from the earliest offset and commits nothing: how the trainer, the
    bench, the demo, the monitor and the tests read a topic's history. It reads committed
    records only (``options`` may say otherwise): a worker in exactly-once mode publishes in
    transactions, and what a killed one had written before its transaction was aborted is not
    output. Start and stop it yourself."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        *topics,
        **aiokafka_kwargs(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **{"isolation_level": "read_committed", **options},
    )


async def topic_partitions(settings: Settings, topic: str) -> list:
    """The ``TopicPartition`` s of ``topic`` as the broker describes them (empty when the
    topic does not exist): what a reader outside any consumer group assigns itself."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [
        TopicPartition(topic, p["partition"])
        for t in described
        if t["topic"] == topic and not t["error_code"]
        for p in t["partitions"]
    ]
