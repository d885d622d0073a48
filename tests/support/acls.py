"""Kafka ACLs for tests, through the admin protocol (aiokafka has the requests, not a call)."""

from __future__ import annotations

from aiokafka import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings

TOPIC, LITERAL, WRITE, DENY = 2, 3, 4, 2  # Kafka's codes: resource type, pattern, op, permission


async def _send(admin: Settings, request) -> list:
    client = AIOKafkaClient(**aiokafka_kwargs(admin))
    await client.bootstrap()
    try:
        response = await client.send(client.get_random_node(), request)
    finally:
        await client.close()
    results = getattr(response, "creation_responses", None) or response.filter_responses
    errors = [r for r in results if r[0]]
    assert not errors, errors
    return results


async def deny_write(admin: Settings, topic: str, user: str) -> None:
    """Deny ``user`` writing to ``topic`` (a DENY wins over everything but a super user)."""
    await _send(admin, CreateAclsRequest(TOPIC, topic, LITERAL, f"User:{user}", "*", WRITE, DENY))


async def allow_again(admin: Settings, topic: str, user: str) -> None:
    """Remove that DENY."""
    await _send(admin, DeleteAclsRequest(TOPIC, topic, LITERAL, f"User:{user}", "*", WRITE, DENY))
