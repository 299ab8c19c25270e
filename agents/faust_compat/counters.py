"""What the adapters fired, by kind (exported as ``driftwatch_consumer_guard_total``)."""

from __future__ import annotations

from collections import Counter

COUNTERS: Counter[str] = Counter()
"""``stale_ack_ignored``, ``head_gap_held``, ``head_gap_markers`` (committed past: no record
there), ``head_refetch`` (sought back to read a dropped message again), ``order_held``
(messages held back after a skipped one), ``order_refetch`` (sought back to a skipped one),
``order_gap_markers`` (a jump over offsets without records, admitted), ``unfinished_batch``
(a batch cancelled or failed mid-way: its acks ignored, read again), ``phantom_gap_ignored``
(a jump Faust saw after one of our seeks back, over offsets already read: not a gap),
``order_gap_overruled`` (Faust's gap list covered an offset the broker said holds a record:
held for it), ``order_superseded`` (a batch that waited for the broker across a rebalance:
held whole, read again), ``fetch_unanswered`` (a fetch the broker left unanswered past
:data:`FETCH_TIMEOUT_SECONDS`: its connection closed, the fetch sent again),
``changelog_batch_failed`` (a batch of table writes the changelog did not take: the write
stores none of its values and fails, and the agent batch that made them is read again),
``write_without_partition`` (table writes no code gave a partition to, outside of any event:
dropped and logged, a bug to report), ``delivery_waited`` (a fetched message whose delivery
to its streams had to wait - a full stream queue, flow control, the producer's buffer - and
so went on under Faust's ``wait_first``: :mod:`.eager_delivery`), ``late_changelog_dropped``
(changelog records of an active partition that came after its restore ended, not applied
over what the agents wrote since: :mod:`.late_changelog`), ``undelivered_refetch`` (a
partition sought back because records the client had handed over never reached an agent and
nothing was left to bring them: :mod:`.undelivered`), ``test_lost`` (testing only: records
dropped on purpose by ``DRIFTWATCH_TEST_STALL=lose:N``)."""
