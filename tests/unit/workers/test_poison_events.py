"""Nothing a producer sends stops a partition: the ingest path against hostile input.

The property tests drive the worker's real per-message path (``Ingest.prepare``: decode,
validate, the sequence table's encoding and store) with generated events, valid and invalid,
at the extremes of every bound, then score what it produced with a real tiny model and build
the outputs. Every message must end as a Job or as an ``InvalidRecord`` with a stage (what the
agent sends to the DLQ); no other exception, and a refused event leaves the user's stored
sequence untouched. A corrupt sequence in a batch costs only its own prediction.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models.vocab import EVENT_TYPES
from schemas.codec import InvalidRecord
from schemas.internal import TrendPartial
from schemas.records import MAX_TS, MIN_TS, Alert, Event, Prediction
from schemas.settings import Settings
from tests.support.helpers import tiny_model
from workers.app import StreamWorker
from workers.pipeline.acks import Slot
from workers.pipeline.dead_letters import dlq_record
from workers.pipeline.ingest import Job
from workers.pipeline.outputs import BatchRows
from workers.pipeline.sequence import (
    CorruptSequence,
    SeqEvent,
    UserSequence,
    model_rows,
)
from workers.scoring.process import RemoteScorer, ScoringFailed, ScoringProcess
from workers.scoring.scorer import OnnxScorer, scores_from

LONG_NON_ASCII = "😀" * 128  # 128 characters, 512 bytes of UTF-8: the schema's limit


@dataclass
class _Message:
    key: bytes | None
    value: bytes | None
    topic: str = "events"
    partition: int = 0
    offset: int = 0
    timestamp: float = 1_700_000_000.0

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


def _slot(key: bytes | None, value: bytes | None, offset: int = 0) -> Slot:
    return Slot(SimpleNamespace(message=_Message(key, value, offset=offset)))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> OnnxScorer:
    registry = tmp_path_factory.mktemp("registry")
    return OnnxScorer.from_directory(registry / tiny_model(registry), max_length=50)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> StreamWorker:
    """The worker's ingest path with a memory store (nothing here talks to a broker)."""
    state = tmp_path_factory.mktemp("state")
    return StreamWorker(
        Settings(store="memory://", registry=state / "registry", data_dir=state, metrics_port=0)
    )


# --- the sequence encoding --------------------------------------------------------------------
def test_schema_limit_ids_round_trip() -> None:
    """The crash of the issue: a 128-character non-ASCII event_id and item_id (512 bytes)."""
    seq = UserSequence()
    seq.insert(SeqEvent(1e9, "view", LONG_NON_ASCII, LONG_NON_ASCII, 3.5), 1e9, 50)
    seq.insert(SeqEvent(2e9, "login", "é" * 128, None, None), 1e9, 50)
    assert UserSequence.from_bytes(seq.to_bytes()) == seq
    _columns_agree(seq.to_bytes())


def _columns(raw: bytes) -> tuple[list[float], list[str], list[str | None]]:
    """What the scoring process reads of one encoded sequence: (ts, types, items)."""
    rows = model_rows([raw])
    return rows.ts, [EVENT_TYPES[code] for code in rows.type_codes], rows.items


def _columns_agree(raw: bytes) -> None:
    """What the scoring process reads of ``raw`` (model_rows) is what the table decodes:
    the same columns, or a refusal whenever the columns cannot be read."""
    try:
        ts, types, items = _columns(raw)
    except CorruptSequence:
        with pytest.raises(CorruptSequence):
            UserSequence.from_bytes(raw)
        return
    try:
        events = UserSequence.from_bytes(raw).events
    except CorruptSequence:  # only an event id it does not read (bad UTF-8) may differ
        return
    assert ts == [e.ts for e in events]
    assert types == [e.type for e in events]
    assert items == [e.item_id for e in events]


def test_a_failed_insert_leaves_the_sequence_as_it_was() -> None:
    seq = UserSequence()
    seq.insert(SeqEvent(1e9, "view", "e1", "i", None), 1e9, 50)
    before = seq.to_bytes()
    with pytest.raises(KeyError):
        seq.insert(SeqEvent(2e9, "teleport", "e2", "i", None), 1e9, 50)
    with pytest.raises(struct.error):
        seq.insert(SeqEvent(2e9, "view", "e3", "x" * 70_000, None), 1e9, 50)
    assert seq.to_bytes() == before and len(seq.events) == len(seq.chunks) == 1


def test_a_batch_reads_as_its_sequences_end_to_end() -> None:
    """The scoring process reads a whole batch into flat columns; each sequence's share must
    be exactly what the table decodes of it, empty sequences and format 1 values included."""
    v1 = struct.pack("<BdH", 1, 5.0, 1) + struct.pack("<dBdBB", 1e9, 4, 2.5, 2, 1) + b"e1" + b"7"
    sequences = [
        UserSequence([SeqEvent(1e9 + i, EVENT_TYPES[i], f"e{i}", f"i{i}", None) for i in range(3)]),
        UserSequence(),
        UserSequence([SeqEvent(2e9, "login", "e9", None, None)]),
    ]
    prefixes = [s.to_bytes() for s in sequences] + [v1]
    rows = model_rows(prefixes)
    assert rows.lengths == [3, 0, 1, 1]
    at = 0
    for raw, length in zip(prefixes, rows.lengths, strict=True):
        events = UserSequence.from_bytes(raw).events  # what the table reads of it
        assert rows.ts[at : at + length] == [e.ts for e in events]
        assert [EVENT_TYPES[c] for c in rows.type_codes[at : at + length]] == [
            e.type for e in events
        ]
        assert rows.items[at : at + length] == [e.item_id for e in events]
        at += length
    assert at == len(rows.ts) == len(rows.items)
    with pytest.raises(CorruptSequence):  # one damaged prefix refuses the batch
        model_rows([prefixes[0], prefixes[0][:-1]])


def test_format_one_values_are_still_read() -> None:
    """What stores and changelogs hold from before the 16-bit lengths."""
    v1 = struct.pack("<BdH", 1, 5.0, 2)
    v1 += struct.pack("<dBdBB", 1e9, 0, 2.5, 2, 1) + b"e1" + b"7"
    v1 += struct.pack("<dBdBB", 1e9 + 1, 4, math.nan, 2, 255) + b"e2"
    seq = UserSequence.from_bytes(v1)
    assert seq.events == [
        SeqEvent(1e9, EVENT_TYPES[0], "e1", "7", 2.5),
        SeqEvent(1e9 + 1, EVENT_TYPES[4], "e2", None, None),
    ]
    assert UserSequence.from_bytes(seq.to_bytes()) == seq  # re-encoded in the current format
    assert _columns(v1) == (
        [1e9, 1e9 + 1],
        [EVENT_TYPES[0], EVENT_TYPES[4]],
        ["7", None],
    )


@given(st.data())
def test_damaged_sequences_are_refused_not_misread(data: st.DataObject) -> None:
    seq = UserSequence(
        [SeqEvent(1e9 + i, "view", f"e{i}", LONG_NON_ASCII[: i * 10], None) for i in range(4)]
    )
    raw = seq.to_bytes()
    cut = data.draw(st.integers(1, len(raw) - 1))
    with pytest.raises(CorruptSequence):
        UserSequence.from_bytes(raw[:cut])
    with pytest.raises(CorruptSequence):
        UserSequence.from_bytes(raw + data.draw(st.binary(min_size=1, max_size=8)))
    with pytest.raises(CorruptSequence):
        model_rows([raw[:cut]])
    with pytest.raises(CorruptSequence):
        model_rows([raw + data.draw(st.binary(min_size=1, max_size=8))])


@given(st.binary(min_size=1, max_size=200))
def test_random_bytes_decode_or_are_refused(raw: bytes) -> None:
    _columns_agree(raw)
    try:
        seq = UserSequence.from_bytes(raw)
    except CorruptSequence:
        return
    assert UserSequence.from_bytes(seq.to_bytes()) == seq


# --- generated events through the real ingest path --------------------------------------------
_odd_text = st.text(st.characters(codec="utf-8"), max_size=130)
_long_ids = st.text(st.sampled_from("é€😀\x00\u200b\U0010ffff"), min_size=120, max_size=129)
_ids = st.one_of(
    st.sampled_from(["u1", "u2", "u3", "1", "0"]),  # shared users, so sequences grow
    _odd_text,
    _long_ids,
    st.integers(-(2**70), 2**70),
    st.none(),
    st.booleans(),
    st.floats(),
    st.lists(st.integers(), max_size=2),
)
_numbers = st.one_of(
    st.none(),
    st.floats(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 5, 5.000001, 1e9, 1e9 + 1, -1, 100_000, 100_001, "3"]),
)
_timestamps = st.one_of(
    st.floats(MIN_TS, MAX_TS),
    st.sampled_from(
        [
            MIN_TS,
            MAX_TS,
            math.nextafter(MIN_TS, 0),
            math.nextafter(MAX_TS, math.inf),
            "1990-01-01T00:00:00Z",
            "2100-01-01T00:00:00+00:00",
            "2099-12-31T23:59:59.999999-01:00",
            "2024-01-01T00:00:00",  # no offset
            "yesterday",
            "",
            True,
        ]
    ),
    _numbers,
)
_nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)
_attrs = st.one_of(
    st.dictionaries(
        st.text(max_size=70),
        st.text(max_size=260) | st.integers(-(2**70), 2**70) | st.floats() | _nested,
        max_size=18,
    ),
    _nested,
)
_events = st.fixed_dictionaries(
    {
        "event_id": _ids,
        "user_id": _ids,
        "type": st.sampled_from([*EVENT_TYPES, "teleport", "", "VIEW"]),
        "ts": _timestamps,
    },
    optional={
        "item_id": _ids,
        "session_id": _ids,
        "price": _numbers,
        "quantity": _numbers,
        "currency": st.sampled_from(["EUR", "eur", "EURO", ""]),
        "rating": _numbers,
        "text": st.text(max_size=2001) | st.text(st.sampled_from("😀<>&'\""), min_size=1990),
        "device_id": _ids,
        "ip": st.sampled_from(["127.0.0.1", "::1", "999.1.1.1", "x" * 70]),
        "country": st.sampled_from(["FR", "fr", ""]),
        "attrs": _attrs,
        "unknown_field": _nested,
    },
)


def _serialise(event: dict, how: str) -> bytes:
    """orjson writes NaN as null and refuses huge ints; json writes NaN and huge ints as is."""
    if how == "orjson":
        try:
            return orjson.dumps(event)
        except TypeError:
            pass
    return json.dumps(event).encode()


@st.composite
def _messages(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    kind = draw(st.sampled_from(["event", "event", "event", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=10)), draw(st.none() | st.binary(max_size=300))
    event = draw(_events)
    value = _serialise(event, draw(st.sampled_from(["orjson", "json"])))
    if draw(st.integers(0, 9)) == 0:  # a key that is not the user's
        return draw(st.none() | st.binary(max_size=5)), value
    user = event["user_id"]
    return (user if isinstance(user, str) else json.dumps(user)).encode(), value


_HUGE = [
    (b"u1", b'{"event_id":"x","pad":"' + b"a" * 1_000_000 + b'"}'),  # 1 MB
    (b"u1", b"[" * 100_000),  # deeper than any parser's limit
    (b"k" * 200_000, b"{}"),  # a key no DLQ record can carry whole
    (b"u1", None),  # a tombstone
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(_messages(), min_size=1, max_size=20))
@example(_HUGE)
@example(
    [
        (
            LONG_NON_ASCII.encode(),
            orjson.dumps(
                {
                    "event_id": LONG_NON_ASCII,
                    "user_id": LONG_NON_ASCII,
                    "item_id": LONG_NON_ASCII,
                    "type": t,
                    "ts": MAX_TS,
                    "attrs": {"category": "😀" * 256},
                    "text": "<script>" + "😀" * 1990,
                }
            ),
        )
        for t in EVENT_TYPES
    ]
)
def test_every_message_becomes_a_job_or_a_dead_letter(
    worker: StreamWorker, scorer: OnnxScorer, messages: list
) -> None:
    store = worker.store.table.data
    rows = SimpleNamespace(version=scorer.version, event_types=scorer.event_types)
    for offset, (key, value) in enumerate(messages):
        slot = _slot(key, value, offset)
        before = store.get(key)
        try:
            job = worker.ingest.prepare(slot)
        except InvalidRecord as exc:
            assert exc.stage in ("decode", "validate"), exc  # "state" is never the input's fault
            assert store.get(key) == before  # a refused event changes nothing
            record = dlq_record(slot.event.message, exc.stage, str(exc))
            size = sum(len(part or b"") for part in (record.key, record.value))
            assert size + sum(len(k) + len(v) for k, v in record.headers or []) < 1_000_000
            continue
        stored = store.get(key)
        assert UserSequence.from_bytes(stored) == worker.store.load(key)  # cache = store
        prefix = UserSequence.from_bytes(job.encoded).events
        assert prefix == job.prefix and prefix[-1].event_id == job.record.event_id
        scores = scores_from(scorer.run([prefix]), scorer.item_ids)
        outputs = worker.batches.outputs
        now = 1_700_000_000.0
        prediction, alerts = outputs.build(job, BatchRows(scores, rows), 0, now, job.latency(now))
        assert Prediction.model_validate_json(prediction.value).event_id == job.record.event_id
        for alert in alerts:
            assert Alert.model_validate_json(alert.value).event_id == job.record.event_id
    for partial in worker.trends.parts.drain():
        assert TrendPartial.model_validate(partial).key == partial["key"]  # within its schema


# --- a batch with a sequence the scorer cannot read -------------------------------------------
async def test_a_bad_sequence_costs_only_its_own_prediction(
    worker: StreamWorker, scorer: OnnxScorer
) -> None:
    process = ScoringProcess()
    await process.start()
    try:
        # fp32: int8's scores move slightly with the other rows of a call, and isolating the
        # bad sequence scores the batch in parts
        info = await process.load(scorer.loaded.directory, 50, 1, precision="fp32")
        remote = RemoteScorer(process, info)
        good = [
            UserSequence([SeqEvent(1e9 + i, "view", f"e{i}", str(i % 7), None)]).to_bytes()
            for i in range(37)
        ]
        blobs = [*good[:20], b"\x02\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00truncated", *good[20:]]
        jobs = [Job(_slot(b"u", b"", i), _VIEW, [], blob, 0.0, b"") for i, blob in enumerate(blobs)]
        scored, scores, failed = await worker.batches.score_isolating(remote, jobs)
        alone = await remote.score(good, [None] * len(good))
    finally:
        await process.stop()
    assert [f.job for f in failed] == [jobs[20]] and failed[0].stage == "score"
    assert "CorruptSequence" in failed[0].reason
    assert scored == jobs[:20] + jobs[21:]
    assert scores is not None and scores.top_items == alone.top_items
    assert (scores.risk == alone.risk).all()


_VIEW = Event.model_validate({"event_id": "e", "user_id": "u", "type": "view", "ts": 1e9})


class _Refusing:
    """A scorer that raises ``error`` whenever a batch holds a refused prefix (a unit fake)."""

    version, event_types = "v", ("view",)

    def __init__(self, error: type[Exception], refused: set[bytes]) -> None:
        self.error, self.refused, self.calls = error, refused, 0

    async def score(self, prefixes: list[bytes], texts: list[str | None]):
        self.calls += 1
        if self.refused & set(prefixes):
            raise self.error("refused")
        return scores_from(
            {
                "next_action": np.zeros((len(prefixes), 1), np.float32),
                "top_items": np.zeros((len(prefixes), 1), np.int64),
                "top_scores": np.zeros((len(prefixes), 1), np.float32),
                "risk": np.zeros(len(prefixes), np.float32),
                "surprise": np.zeros(len(prefixes), np.float32),
                "sentiment": np.full(len(prefixes), np.nan, np.float32),
            },
            ["<pad>"],
        )


async def test_bisection_is_for_what_the_model_refuses_not_for_a_dead_process(
    worker: StreamWorker,
) -> None:
    jobs = [Job(_slot(b"u", b"", i), _VIEW, [], b"%d" % i, 0.0, b"") for i in range(256)]
    model = _Refusing(ScoringFailed, {b"7", b"200"})
    scored, _, failed = await worker.batches.score_isolating(model, jobs)
    assert [f.job for f in failed] == [jobs[7], jobs[200]] and len(scored) == 254
    assert model.calls <= 4 * 8 + 1  # about 2·log2(256) per culprit, not 256
    dead = _Refusing(RuntimeError, {b"7"})
    scored, _, failed = await worker.batches.score_isolating(dead, jobs)
    assert dead.calls == 1 and not scored and len(failed) == 256
