"""Event validation: bounds, errors that name the field, and totality of the decoder."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Event, InvalidRecord, decode_event, encode
from schemas.jsonschema import drift
from schemas.records import MAX_TEXT_CHARS, Prediction

VALID = {
    "event_id": "e1",
    "user_id": "u1",
    "type": "purchase",
    "ts": 1_700_000_000,
    "item_id": "i9",
    "price": 12.5,
    "quantity": 1,
    "currency": "EUR",
    "country": "DE",
    "ip": "10.0.0.1",
    "device_id": "d1",
    "session_id": "s1",
    "attrs": {"a": 1},
}


def _raw(**change) -> bytes:
    return orjson.dumps({**VALID, **change})


def test_valid_event_round_trips() -> None:
    event = decode_event(_raw())
    assert decode_event(encode(event)) == event


def test_numeric_ids_and_rfc3339() -> None:
    event = decode_event(_raw(user_id=42, item_id=7, ts="2024-01-01T00:00:00Z"))
    assert (event.user_id, event.item_id, event.ts) == ("42", "7", 1_704_067_200.0)


@pytest.mark.parametrize(
    ("change", "stage", "field"),
    [
        ({"type": "teleport"}, "validate", "type"),
        ({"ts": "yesterday"}, "validate", "ts"),
        ({"ts": 5}, "validate", "ts"),
        ({"ts": "2024-01-01T00:00:00"}, "validate", "ts"),
        ({"ts": True}, "validate", "ts"),
        ({"price": -1}, "validate", "price"),
        ({"rating": 9}, "validate", "rating"),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "validate", "text"),
        ({"event_id": ""}, "validate", "event_id"),
        ({"user_id": "u" * 129}, "validate", "user_id"),
        ({"currency": "euro"}, "validate", "currency"),
        ({"ip": "999.1.1.1"}, "validate", "ip"),
        ({"attrs": {f"k{i}": i for i in range(17)}}, "validate", "attrs"),
        ({"quantity": 1.5}, "validate", "quantity"),
    ],
)
def test_bad_field_is_named(change, stage, field) -> None:
    with pytest.raises(InvalidRecord) as err:
        decode_event(_raw(**change))
    assert err.value.stage == stage
    assert err.value.field == field


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[1]",
        b"null",
        b"\xff\xfe",
        b"NaN",
        None,
        b"{" * 5000,
        b'{"a":' + b"1" * 400 + b"}",
    ],
)
def test_undecodable_is_decode_stage(raw) -> None:
    with pytest.raises(InvalidRecord) as err:
        decode_event(raw)
    assert err.value.stage == "decode"


def test_missing_field() -> None:
    obj = dict(VALID)
    del obj["user_id"]
    with pytest.raises(InvalidRecord) as err:
        decode_event(orjson.dumps(obj))
    assert err.value.field == "user_id"


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_invalid(raw: bytes) -> None:
    try:
        assert isinstance(decode_event(raw), Event)
    except InvalidRecord:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(VALID)), json_values, max_size=6))
def test_near_valid_objects_decode_or_raise_invalid(change: dict) -> None:
    try:
        raw = orjson.dumps({**VALID, **change})
    except TypeError:  # orjson refuses ints over 64 bits; not a Kafka payload
        return
    try:
        event = decode_event(raw)
    except InvalidRecord:
        return
    assert decode_event(encode(event)) == event


def test_output_records_refuse_nan() -> None:
    with pytest.raises(ValueError):
        Prediction(
            event_id="e",
            user_id="u",
            model_version="v",
            ts=1.0,
            next_action={"view": float("nan")},
            top_items=[],
            risk=0.1,
            surprise=0.1,
            sequence_length=1,
            latency_ms=1,
        )


def test_json_schemas_are_current() -> None:
    assert drift() == [], "run `python -m schemas.jsonschema` and commit schemas/json/"
