"""A graceful stop within a grace period: SIGTERM drains, a stop that overruns exits anyway.

Kubernetes sends SIGTERM, waits ``terminationGracePeriodSeconds`` (30 s by default), then
SIGKILLs. On SIGTERM Faust stops fetching and commits what is acked; the worker then finishes
and publishes the batches it holds (Faust's ``stream_wait_empty`` waits until every delivered
event is acked), its producer flushes, and the
consumer commits those too on its way out: the next owner of the partitions starts exactly
after them. A stop that has not ended after ``FORESIGHT_SHUTDOWN_GRACE_SECONDS`` (below the
orchestrator's period) ends here with EXIT_GRACE_EXPIRED instead of being killed mid-write:
what was not committed is delivered again, so nothing is lost either way.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import NoReturn

from faust.worker import Worker

log = logging.getLogger(__name__)

EXIT_GRACE_EXPIRED = 71
"""The exit code of a stop that did not finish within the grace period."""


def exit_now(code: int, kill_also: Callable[[], int | None] = lambda: None) -> NoReturn:
    """Exit at once with ``code``: for a worker that must not wait on whatever is stuck.

    The scoring process (``kill_also`` gives its pid) is killed first: a stopped one would
    outlive us. Nothing uncommitted is lost: it is delivered again to the next owner."""
    pid = kill_also()
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    logging.shutdown()
    os._exit(code)


class GracePeriod:
    """The time a stop may take, counted from its start; enforced by a daemon thread."""

    def __init__(self, seconds: float, kill_also: Callable[[], int | None]) -> None:
        self.seconds = seconds
        self._kill_also = kill_also
        self._began: float | None = None

    def begin(self) -> None:
        """Start counting (once): past the period the process exits, whatever it is doing."""
        if self._began is not None:
            return
        self._began = time.monotonic()
        timer = threading.Timer(self.seconds, self._expire)
        timer.daemon = True
        timer.start()

    def remaining(self) -> float:
        """Seconds left for the stop (the whole period before it began)."""
        if self._began is None:
            return self.seconds
        return max(0.0, self.seconds - (time.monotonic() - self._began))

    def _expire(self) -> None:
        log.critical(
            "the stop did not finish within FORESIGHT_SHUTDOWN_GRACE_SECONDS=%.0f; exiting with "
            "code %d (what was not committed is delivered again)",
            self.seconds,
            EXIT_GRACE_EXPIRED,
        )
        exit_now(EXIT_GRACE_EXPIRED, self._kill_also)


class GracefulWorker(Worker):
    """Faust's worker, with the grace period starting when its stop does (SIGTERM, SIGINT)."""

    def __init__(self, *args, grace: GracePeriod, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.grace = grace

    async def on_stop(self) -> None:
        """Called first thing in ``Service.stop``, before the app and its services stop."""
        self.grace.begin()
        await super().on_stop()
