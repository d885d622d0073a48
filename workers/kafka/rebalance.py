"""What the worker does when Faust rebalances its partitions.

Faust sends its signals in this order on every rebalance: ``on_partitions_revoked`` (the
partitions this worker loses; their streams are stopped and their unacked messages will be
redelivered to the new owner), then ``on_partitions_assigned``, then table recovery, then
``on_rebalance_complete``, and last the seek of each stream partition to its committed offset,
after which the flow resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from workers.pipeline.acks import OrderedAcks
from workers.pipeline.transactions import Transactions


class RebalanceHooks:
    """Keeps the ack lines, the transactions, the trend watermarks and the fetcher consistent
    across a rebalance."""

    def __init__(
        self,
        app: Any,
        acks: OrderedAcks,
        transactions: Transactions | None,
        trends_assigned: Callable[[Iterable[Any]], None],
    ) -> None:
        self.app = app
        self.acks = acks
        self.transactions = transactions
        self.trends_assigned = trends_assigned

    def connect(self) -> None:
        self.app.on_partitions_revoked.connect(self.on_revoked)
        self.app.on_partitions_assigned.connect(self.on_assigned)
        self.app.on_rebalance_complete.connect(self.on_rebalance_complete)

    async def on_revoked(
        self, sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any
    ) -> None:
        """``on_partitions_revoked``: the revoked partitions come first in ``args``.

        Before: their streams have stopped taking messages. After: their ack lines are gone,
        so no late delivery acks a message the new owner will handle again, and (exactly-once)
        their transactional producers are closed, with no transaction open."""
        self.acks.forget(args[0])
        if self.transactions is not None:
            await self.transactions.revoke(args[0])

    async def on_assigned(
        self, sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any
    ) -> None:
        """``on_partitions_assigned``: the new assignment comes first in ``args``.

        After: the trend watermarks heard on partitions no longer assigned hold no window
        open, and those of partitions kept stay. (Every rebalance revokes every partition
        first; forgetting them all let the first worker heard after it close windows that
        the others had not reached yet.)"""
        self.trends_assigned(args[0])

    def on_rebalance_complete(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """``on_rebalance_complete``: recovery is done, the seek to the committed offsets is
        next.

        Recovery runs with the fetcher's flow on (it reads the changelogs), so the fetcher
        can still be handing over a batch of stream messages while that seek happens; its
        read offsets then move past the seek, and Faust drops the messages fetched again
        from the committed offset as already read (faust-streaming #596: the kill -9 test
        lost up to a few hundred events per partition this way). Stopping the flow here
        ends that batch first. After: the flow is stopped; Faust resumes it itself once the
        seek is done."""
        self.app.consumer.stop_flow()
