"""Typed records for every topic of DESIGN.md, with bounds on every field.

The worker trusts nothing it reads from Kafka: each field has a length, range or finiteness bound
so that one hostile or broken producer cannot blow up memory, the model or a downstream consumer.
Pydantic gives us the validation, the error locations and the JSON Schema export from one source.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

#: Accepted event time range: MovieLens history starts in 1997, nothing legitimate is from 2100.
MIN_TS = 631_152_000.0  # 1990-01-01T00:00:00Z
MAX_TS = 4_102_444_800.0  # 2100-01-01T00:00:00Z
MAX_TEXT_CHARS = 2_000
MAX_ATTRS = 16
#: "category:" and the longest attribute value an event may carry (an item id is shorter).
MAX_TREND_KEY_CHARS = len("category:") + 256
#: A trend's example texts are cut to this many characters (a monitor shows them, not whole essays).
TREND_TEXT_CHARS = 280

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ShortStr = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
TrendKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TREND_KEY_CHARS)]


class EventType(StrEnum):
    """The closed set of behaviour events; the model has one embedding per member."""

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    REVIEW = "review"
    SEARCH = "search"
    LOGIN = "login"
    LOGOUT = "logout"
    PAYMENT = "payment"
    SIGNUP = "signup"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


def _coerce_id(value: Any) -> Any:
    """Producers often send numeric ids (MovieLens does); we store every id as a string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def parse_timestamp(value: Any) -> float:
    """Epoch seconds (int/float) or an RFC 3339 string with an offset, as epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be epoch seconds or RFC 3339, not a boolean")
    if isinstance(value, (int, float)):
        ts = float(value)
    elif isinstance(value, str):
        if len(value) > 40:
            raise ValueError("timestamp string too long")
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"unparseable timestamp {value!r}") from exc
        if parsed.tzinfo is None:
            raise ValueError("RFC 3339 timestamp needs a UTC offset")
        ts = parsed.timestamp()
    else:
        raise ValueError("timestamp must be epoch seconds or an RFC 3339 string")
    if not math.isfinite(ts) or not MIN_TS <= ts <= MAX_TS:
        raise ValueError(f"timestamp {value!r} outside 1990-01-01..2100-01-01")
    return ts


class Event(_Record):
    """A user behaviour event (schema v1): the input record on the ``events`` topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: Id
    user_id: Id
    type: EventType
    ts: float = Field(description="Event time, epoch seconds (RFC 3339 accepted on input).")
    item_id: Id | None = None
    session_id: Id | None = None
    price: Annotated[Finite, Field(ge=0, le=1e9)] | None = None
    quantity: Annotated[int, Field(ge=0, le=100_000)] | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    rating: Annotated[Finite, Field(ge=1, le=5)] | None = None
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] | None = None
    device_id: ShortStr | None = None
    ip: ShortStr | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    attrs: dict[
        ShortStr, Annotated[str, StringConstraints(max_length=256)] | bool | int | Finite
    ] = Field(default_factory=dict, max_length=MAX_ATTRS)

    _ids = field_validator("event_id", "user_id", "item_id", "session_id", mode="before")(
        _coerce_id
    )

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> float:
        return parse_timestamp(value)

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value


class ItemScore(_Record):
    """One recommended next item."""

    item_id: Id
    score: Finite


class Prediction(_Record):
    """What the model expects next after one scored event (topic ``predictions``)."""

    event_id: Id
    user_id: Id
    model_version: Id
    ts: Finite = Field(description="Time of the scored event, epoch seconds.")
    next_action: dict[str, Finite] = Field(description="Probability of each next event type.")
    top_items: list[ItemScore]
    risk: Annotated[Finite, Field(ge=0, le=1)]
    surprise: Annotated[Finite, Field(ge=0, le=1)]
    sentiment: Annotated[Finite, Field(ge=-1, le=1)] | None = Field(
        None,
        description="Sentiment of the event's text in [-1, 1] from the model_version's sentiment "
        "model (its opinion-word fallback for artifacts without one); null when the event has "
        "no text or the fallback found no opinion.",
    )
    sequence_length: Annotated[int, Field(ge=1)]
    latency_ms: Annotated[Finite, Field(ge=0)]


class AlertKind(StrEnum):
    """Why an alert fired: the supervised risk head, or label-free surprise."""

    FRAUD_RISK = "fraud_risk"
    ANOMALY = "anomaly"


class AlertReason(_Record):
    """One recent event that drove an alert."""

    event_id: Id
    type: EventType
    ts: Finite
    item_id: Id | None = None
    price: Finite | None = None


class Alert(_Record):
    """A risk or anomaly over its threshold for one user (topic ``alerts``)."""

    alert_id: Id
    event_id: Id
    user_id: Id
    kind: AlertKind
    score: Finite
    threshold: Finite
    reasons: list[AlertReason]
    model_version: Id
    ts: Finite


class TrendText(_Record):
    """A text behind a trend's sentiment: which event said it, what it said, how it scored."""

    event_id: Id
    text: Annotated[str, StringConstraints(max_length=TREND_TEXT_CHARS)]
    sentiment: Annotated[Finite, Field(ge=-1, le=1)]


class Trend(_Record):
    """Windowed activity of one item or category (topic ``trends``)."""

    key: TrendKey = Field(description="item:<id> or category:<name>.")
    window_start: Finite
    window_end: Finite
    volume: Annotated[int, Field(ge=0)]
    engagement: dict[str, Annotated[int, Field(ge=0)]]
    conversion: Annotated[Finite, Field(ge=0)]
    sentiment_mean: Finite | None = Field(
        description="Mean sentiment in [-1, 1] of the window's texts (reviews and other "
        "opinions; search queries are not counted); null when there were none."
    )
    sentiment_count: Annotated[int, Field(ge=0)] = Field(
        0, description="Texts behind sentiment_mean."
    )
    sentiment_change: Finite | None = Field(
        description="sentiment_mean minus the key's previous window that had a sentiment."
    )
    sentiment_texts: Annotated[list[TrendText], Field(max_length=2)] = Field(
        default_factory=list,
        description="The window's most negative and most positive texts (one each, the same "
        "one when only one text scored; empty without texts): what moved sentiment_mean, for a "
        "monitor to show. User input: escape it wherever it is rendered.",
    )
    volume_change: Finite
    zscore: Finite


class ModelAnnouncement(_Record):
    """A model version made current (topic ``models.control``, key ``current``)."""

    version: Id
    uri: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class CatalogItem(_Record):
    """One item of the shop's catalog (topic ``catalog``, compacted, key ``item_id``; a null
    value deletes the item). Workers embed its text with the served model's text encoder, so
    an item published after training can be recommended from its description alone."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    item_id: Id
    title: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    category: Annotated[str, StringConstraints(max_length=256)] | None = None
    description: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] | None = None
    attrs: dict[
        ShortStr, Annotated[str, StringConstraints(max_length=256)] | bool | int | Finite
    ] = Field(default_factory=dict, max_length=MAX_ATTRS)

    _ids = field_validator("item_id", mode="before")(_coerce_id)

    def text(self) -> str:
        """What the text encoder reads: the same words, in the same order, that the trainer
        reads for an item (see :func:`item_text`)."""
        return item_text(self.title, self.category, self.description)


def item_text(title: Any, category: Any = None, description: Any = None) -> str:
    """An item's text for the language model: title, category and description, space-joined
    (the trainer builds its items' texts with this too, from events' ``title``/``category``
    attributes, so a catalog item and a trained item with the same words embed the same)."""
    return " ".join(str(x) for x in (title, category, description) if x not in (None, ""))


#: Every record type, by the name used for its JSON Schema file.
RECORD_TYPES: dict[str, type[BaseModel]] = {
    "event": Event,
    "prediction": Prediction,
    "alert": Alert,
    "trend": Trend,
    "model_announcement": ModelAnnouncement,
    "catalog_item": CatalogItem,
}
