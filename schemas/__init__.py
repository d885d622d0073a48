"""Record types, codecs, validation and JSON Schema export. Depends on nothing else in Foresight."""

from schemas.codec import InvalidRecord, decode, decode_event, encode
from schemas.records import (
    Alert,
    AlertKind,
    AlertReason,
    Event,
    EventType,
    ItemScore,
    ModelAnnouncement,
    Prediction,
    Trend,
    TrendText,
)
from schemas.settings import TOPIC_BASES, Settings, SettingsError

__all__ = [
    "TOPIC_BASES",
    "Alert",
    "AlertKind",
    "AlertReason",
    "Event",
    "EventType",
    "InvalidRecord",
    "ItemScore",
    "ModelAnnouncement",
    "Prediction",
    "Settings",
    "SettingsError",
    "Trend",
    "TrendText",
    "decode",
    "decode_event",
    "encode",
]
