"""Keep a broker outage from flooding the worker's log.

While a partition has no known leader, aiokafka's producer asks for metadata again as soon as
the previous request fails, with no backoff (its sender loop waits only on the metadata future),
and logs each failure: with the broker down, one worker wrote ~2,200 lines a second (23 MB in a
45 s outage). Each repeating library message is let through once per interval, with the count of
the copies held back in between, so the log still says what happened and for how long.
"""

from __future__ import annotations

import logging
import time

NOISY_LOGGERS = ("aiokafka", "faust.transport")
"""Libraries whose repeats flood the log in an outage, and whose debug records cost ~3% of the
hot path even when nobody reads them."""
MAX_TRACKED = 1_000  # distinct message templates remembered; more clears the table


class RepeatLimiter(logging.Filter):
    """A handler filter: each (logger, message template) of ``prefixes`` at most once per
    ``interval`` seconds."""

    def __init__(self, interval: float = 10.0, prefixes: tuple[str, ...] = NOISY_LOGGERS):
        super().__init__()
        self.interval, self.prefixes = interval, prefixes
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # → (last let through, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        template = record.__dict__.setdefault("repeat_template", str(record.msg))  # pre-suffix
        key, now = (record.name, template), time.monotonic()
        last, held = self._seen.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._seen[key] = (last, held + 1)
            return False
        if len(self._seen) >= MAX_TRACKED:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {now - last:.0f} s]"
        return True


def limit_repeats(interval: float = 10.0) -> None:
    """Put one RepeatLimiter on every handler of the root logger (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatLimiter) for f in handler.filters):
            handler.addFilter(RepeatLimiter(interval))


def quiet_noisy_libraries() -> None:
    """Raise the noisy libraries' loggers to INFO at least, and let a repeating message of
    theirs through once per 10 s (with the count held back) instead of in a tight loop."""
    for name in NOISY_LOGGERS:
        if logging.getLogger(name).getEffectiveLevel() < logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    limit_repeats()
