"""What the worker says when an output cannot be published (it exits for a restart with it)."""

from __future__ import annotations

from aiokafka.errors import (
    InvalidTxnState,
    KafkaError,
    KafkaTimeoutError,
    ProducerFenced,
    TopicAuthorizationFailedError,
)

from workers.kafka.publisher import why_publishing_stopped


def _wrapped_by_the_sender(cause: BaseException) -> KafkaError:
    """What aiokafka's sender raises for an error it did not expect (its ``from exc``)."""
    try:
        try:
            raise cause
        except Exception as exc:
            raise KafkaError("Unexpected error during batch delivery") from exc
    except KafkaError as wrapped:
        return wrapped


def test_a_fence_is_named_even_when_aiokafka_wraps_it() -> None:
    why = why_publishing_stopped(60, _wrapped_by_the_sender(ProducerFenced()))
    assert "fenced its transactional producer" in why
    assert "caused by ProducerFenced" in why


def test_a_transaction_the_broker_dropped_is_named_with_its_likely_causes() -> None:
    why = why_publishing_stopped(60, _wrapped_by_the_sender(InvalidTxnState()))
    assert why.startswith("the broker no longer holds this worker's transaction open")
    assert "fenced" in why and "30 s timeout" in why
    assert "caused by InvalidTxnState" in why


def test_only_a_timeout_is_called_a_timeout() -> None:
    expired = why_publishing_stopped(60, KafkaTimeoutError("batch expired"))
    assert expired.startswith("the broker has not taken an output for 60 s")
    assert "caused by" not in expired
    other = why_publishing_stopped(60, _wrapped_by_the_sender(RuntimeError("boom")))
    assert other.startswith("the producer failed (KafkaError")
    assert other.endswith("caused by RuntimeError: boom)")


def test_an_authorization_error_says_what_to_grant() -> None:
    why = why_publishing_stopped(60, TopicAuthorizationFailedError("t.predictions"))
    assert "grant it WRITE and DESCRIBE on the output topics" in why


def test_a_cycle_of_causes_ends() -> None:
    a, b = KafkaError("a"), KafkaError("b")
    a.__cause__, b.__cause__ = b, a
    assert (
        why_publishing_stopped(60, a)
        == "the producer failed (KafkaError: a; caused by KafkaError: b)"
    )
