"""The one place that reaches into Faust's private internals (and aiokafka's), written for
faust-streaming 0.15.3: every patch checks that version first (:func:`version.check_version`)
and refuses any other rather than patch code it has not read. No module outside this
package touches a private name of Faust, mode or aiokafka (``tests/unit/test_layout.py``).

- :mod:`.guards`: the consumer never commits past a message the worker did not process, and
  each partition is applied in offset order (the offset guards rely on it);
- :mod:`.commit_cap`: nor past a message whose state is not written yet (state written every
  few seconds, not after every batch);
- :mod:`.current_event`: which partition Faust reads and writes a table in;
- :mod:`.backpressure`: agents wait for the worker's later stages to keep up;
- :mod:`.batches`: an agent's batches, acked only once their work and changelog records are
  delivered, the next one gathered while one is processed;
- :mod:`.bulk_delivery`: the input agents' messages handed from the fetch loop to their
  batches in bulk, past Faust's per-message path;
- :mod:`.bulk_writes`: a batch's table writes into RocksDB and the changelog in record
  batches, not one Faust send per key;
- :mod:`.direct_reads`: a table read straight from its partition's RocksDB;
- :mod:`.fetch_timeout`: fetches the broker leaves unanswered are sent again;
- :mod:`.eager_delivery`: the fetch loop delivers a message without four tasks for it;
- :mod:`.undelivered`: records the client handed over that never reached an agent are read
  again;
- :mod:`.request_encoding`: aiokafka's requests encoded with one copy of their record
  batches;
- :mod:`.late_changelog`: changelog records that come after a partition's restore ended
  are not applied over what the agents wrote since;
- :mod:`.read_ahead`: the agents' read-ahead bounded by bytes;
- :mod:`.quiet_monitor`: Faust's Monitor is not fed every message (its web pages are off);
- :mod:`.rocksdb_memory`: one block cache and memtable budget for all of a worker's stores;
- :mod:`.probes`: the broker asked directly where Faust's bookkeeping cannot be trusted;
- :mod:`.introspection`: read-only views for the API, health checks and the watchdog;
- :mod:`.counters`: what fired, counted.

Mutable settings live in the submodule that reads them (``guards.ORDER``,
``batches.AFTER_BATCH``, ...): set them there.
"""

from agents.faust_compat import (
    backpressure,
    batches,
    bulk_delivery,
    bulk_writes,
    commit_cap,
    counters,
    current_event,
    direct_reads,
    eager_delivery,
    fetch_timeout,
    guards,
    introspection,
    late_changelog,
    probes,
    quiet_monitor,
    read_ahead,
    request_encoding,
    rocksdb_memory,
    undelivered,
    version,
)

__all__ = [
    "backpressure",
    "batches",
    "bulk_delivery",
    "bulk_writes",
    "commit_cap",
    "counters",
    "current_event",
    "direct_reads",
    "eager_delivery",
    "fetch_timeout",
    "guards",
    "introspection",
    "late_changelog",
    "probes",
    "quiet_monitor",
    "read_ahead",
    "request_encoding",
    "rocksdb_memory",
    "undelivered",
    "version",
]
