"""A broker outage must not flood the log: repeating library messages are held back."""

from __future__ import annotations

import logging

import pytest

from workers.kafka import log_limits
from workers.kafka.log_limits import RepeatLimiter


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_repeats_pass_once_per_interval_with_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(log_limits.time, "monotonic", lambda: clock[0])
    keep = _Keep()
    keep.addFilter(RepeatLimiter(interval=10.0))
    client, ours = logging.getLogger("aiokafka.client"), logging.getLogger("workers.test")
    for logger in (client, ours):
        logger.addHandler(keep)
        logger.propagate = False
    try:
        for _ in range(500):
            client.error("Unable to update metadata from %r", [1])
            ours.error("ours %d", 1)
        clock[0] += 10.0
        client.error("Unable to update metadata from %r", [1])
    finally:
        for logger in (client, ours):
            logger.removeHandler(keep)
            logger.propagate = True
    metadata = [line for line in keep.lines if line.startswith("Unable")]
    assert metadata == [
        "Unable to update metadata from [1]",
        "Unable to update metadata from [1] [499 more like this in the last 10 s]",
    ]
    assert keep.lines.count("ours 1") == 500  # our own messages are never held back
