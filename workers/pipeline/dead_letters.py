"""The DLQ record of a message that cannot be handled: its original bytes and why it failed."""

from __future__ import annotations

import time

from schemas import internal as dlq
from schemas.codec import Stage
from workers.kafka.publisher import Record


def reason(exc: BaseException) -> str:
    """An exception as a DLQ reason: its type and message."""
    return f"{type(exc).__name__}: {exc}"


def dlq_record(message, stage: Stage, error: str) -> Record:
    """The DLQ record of a failed message: its original key and bytes, and Connect-style
    headers that say where and why it failed (names in schemas/internal.py).

    A message at the broker's size limit would be refused on the DLQ too (the headers make it
    larger), and a refusal there would stop the partition, so a key over 64 KiB or a value over
    512 KiB is cut, with its original size in a ``dlq.key|value.truncated.from`` header;
    ``dlq.source.*`` still locate the whole original."""
    headers = [
        (dlq.DLQ_STAGE, stage.encode()),
        (dlq.DLQ_ERROR, error[: dlq.DLQ_MAX_ERROR_CHARS].encode()),
        (dlq.DLQ_SOURCE_TOPIC, message.topic.encode()),
        (dlq.DLQ_SOURCE_PARTITION, str(message.partition).encode()),
        (dlq.DLQ_SOURCE_OFFSET, str(message.offset).encode()),
        (dlq.DLQ_TS, f"{time.time():.3f}".encode()),
    ]
    key, value = message.key, message.value
    for part, original, limit in (
        ("key", key, dlq.DLQ_MAX_KEY_BYTES),
        ("value", value, dlq.DLQ_MAX_VALUE_BYTES),
    ):
        if original is not None and len(original) > limit:
            name = dlq.DLQ_TRUNCATED_FROM.format(part=part)
            headers.append((name, str(len(original)).encode()))
    return Record(
        None if key is None else key[: dlq.DLQ_MAX_KEY_BYTES],
        None if value is None else value[: dlq.DLQ_MAX_VALUE_BYTES],
        headers,
    )
