"""Formats the worker exchanges with other workers and with operators, not with subscribers.

They are contracts all the same: during a rolling upgrade old and new workers read each
other's ``trends.partial`` records, and DLQ tooling reads the ``dlq.*`` headers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.records import Finite, TrendKey, TrendText


class TrendPartial(BaseModel):
    """One worker's additive aggregate of one trend key in one window (topic
    ``trends.partial``, inside a :class:`TrendPartials` record); the worker that owns the key
    merges them into a :class:`~schemas.records.Trend`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: TrendKey = Field(description="item:<id> or category:<name>.")
    window_start: Finite = Field(description="Start of the event-time window, epoch seconds.")
    volume: Annotated[int, Field(ge=0)] = Field(description="Events in the window.")
    counts: dict[str, Annotated[int, Field(ge=0)]] = Field(description="Events by type.")
    sentiment_sum: Finite = Field(description="Sum of the events' sentiments in [-1, 1].")
    sentiment_count: Annotated[int, Field(ge=0)] = Field(
        description="Events whose text carried a sentiment."
    )
    texts: Annotated[list[TrendText], Field(max_length=2)] = Field(
        default_factory=list,
        description="The most negative and most positive text among them (absent from workers "
        "older than the trend texts: read as none).",
    )


class TrendPartials(BaseModel):
    """A ``trends.partial`` record: one worker's partials for the keys of one partition since
    its last flush, and its event-time watermark. Every flush sends one to every partition,
    with no partials if it has none, so that the watermark reaches every key's owner.

    Workers older than the watermark send a bare JSON list of partials instead; it is
    merged, and moves no watermark."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="The sending worker (host:pid): the watermark is kept per source."
    )
    watermark: Finite | None = Field(
        description="Event time, epoch seconds, before which this worker expects to send no "
        "more partials: the slowest of its partitions with events still to read. It goes back "
        "when a partition is taken over from its last commit; 0 while a partition's events "
        "come from a time it does not know yet (it holds every window open then); null when "
        "it has nothing read and nothing to read (it holds none)."
    )
    partials: list[TrendPartial] = Field(description="The partials, in no particular order.")
    last: bool = Field(
        False,
        description="The worker is stopping and sends no more: its watermark holds no window "
        "open from now on.",
    )


#: Headers of a DLQ record (Kafka Connect's convention): where the original message came from
#: and why it failed. Its key and value are the original's (cut to the limits below).
DLQ_STAGE = "dlq.stage"  # one of schemas.codec.Stage
DLQ_ERROR = "dlq.error"  # the reason, at most DLQ_MAX_ERROR_CHARS
DLQ_SOURCE_TOPIC = "dlq.source.topic"
DLQ_SOURCE_PARTITION = "dlq.source.partition"
DLQ_SOURCE_OFFSET = "dlq.source.offset"
DLQ_TS = "dlq.ts"  # when it was dead-lettered, epoch seconds
DLQ_TRUNCATED_FROM = "dlq.{part}.truncated.from"  # part key|value: its size before the cut
DLQ_MAX_ERROR_CHARS = 1000
DLQ_MAX_KEY_BYTES = 64 * 1024
DLQ_MAX_VALUE_BYTES = 512 * 1024  # inputs over 64 KiB are refused at decode anyway

#: Internal record types, by the name of their JSON Schema file.
INTERNAL_TYPES: dict[str, type[BaseModel]] = {
    "trend_partial": TrendPartial,
    "trend_partials": TrendPartials,
}
