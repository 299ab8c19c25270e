"""agents.client_logs: aiokafka's retry errors during a broker outage, one line per kind."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agents import client_logs
from agents.client_logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, level: int = logging.ERROR, name: str = "aiokafka") -> (
    logging.LogRecord
):  # fmt: skip
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_first_of_each_kind_passes_then_the_count_of_dropped_ones() -> None:
    clock = Clock()
    f = RepeatFilter(window=30.0, clock=clock)
    template = "Unable connect to node with id %s: %s"
    assert f.filter(record(template, 111, "refused"))
    # Same template, other arguments: the same kind, dropped for 30 s.
    assert not any(f.filter(record(template, node, "refused")) for node in (111, 112, 111))
    # Another template, or another logger, is another kind.
    assert f.filter(record("Unable to update metadata from %s", [111]))
    assert f.filter(record(template, 111, "x", name="aiokafka.consumer.fetcher"))
    clock.now += 29.9
    assert not f.filter(record(template, 111, "refused"))
    clock.now += 0.2
    late = record(template, 111, "refused")
    assert f.filter(late)
    assert late.getMessage() == (
        "Unable connect to node with id 111: refused "
        "[and 4 more like this in the 30 s before, not logged]"
    )
    # A kind that comes back after a quiet window carries no count.
    clock.now += 60
    again = record(template, 111, "refused")
    assert f.filter(again) and again.getMessage().endswith("refused")


def test_info_and_debug_are_not_touched() -> None:
    f = RepeatFilter(clock=Clock())
    assert all(f.filter(record("Joined group %s", "g", level=logging.INFO)) for _ in range(5))
    assert all(f.filter(record("debug", level=logging.DEBUG)) for _ in range(5))


def test_kinds_are_bounded() -> None:
    clock = Clock()
    f = RepeatFilter(window=30.0, clock=clock)
    for i in range(3000):  # f-string messages: a new template each time
        assert f.filter(record(f"error {i}"))
    assert len(f._kinds) <= 1024


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.client_logs")
    yield log
    log.filters.clear()


def test_install_filters_named_loggers_once(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    client_logs.install([logger.name], window=60.0)
    client_logs.install([logger.name], window=60.0)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        for _ in range(100):
            logger.error("Failed fetch messages from %s: %s", 111, "NodeNotReadyError")
        logger.info("Discovered coordinator %s", 111)
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]


def test_aiokafka_loggers_exist() -> None:
    """The names in AIOKAFKA_LOGGERS are the loggers aiokafka logs on."""
    import aiokafka.client
    import aiokafka.consumer.fetcher
    import aiokafka.consumer.group_coordinator
    import aiokafka.producer.sender

    for module in (aiokafka.client, aiokafka.consumer.fetcher,
                   aiokafka.consumer.group_coordinator, aiokafka.producer.sender):  # fmt: skip
        assert module.log.name in client_logs.AIOKAFKA_LOGGERS


def test_faust_since_start_complaints_about_a_fresh_assignment_are_info_until_its_grace() -> None:
    """Faust measures "not fetched since start" from the worker's start: a partition a
    rebalance assigned a moment ago was an ERROR. From the assignment, after the grace it
    is an ERROR again; a partition never assigned at a rebalance is left as Faust says."""
    from faust.transport.drivers import aiokafka as faust_driver
    from faust.types import TP

    from agents.client_logs import SINCE_START, FreshAssignmentFilter

    templates = [
        faust_driver.SLOW_PROCESSING_NO_FETCH_SINCE_START,
        faust_driver.SLOW_PROCESSING_NO_RESPONSE_SINCE_START,
        faust_driver.SLOW_PROCESSING_NO_HIGHWATER_SINCE_START,
        faust_driver.SLOW_PROCESSING_STREAM_IDLE_SINCE_START,
        faust_driver.SLOW_PROCESSING_NO_COMMIT_SINCE_START,
    ]
    for marker, template in zip(SINCE_START, templates, strict=True):
        assert marker in template  # Faust's words, as this Faust version has them

    now = [0.0]
    fresh = FreshAssignmentFilter(300.0, clock=lambda: now[0])

    def logged(template: str, tp: TP) -> logging.LogRecord:
        msg = f"[^---AIOKafkaConsumerThread]: {template}"
        record = logging.LogRecord("faust", logging.ERROR, "", 0, msg, (tp, "2 hours ago"), None)
        assert fresh.filter(record)  # never dropped, only its level
        return record

    now[0] = 7200.0
    fresh.assigned([("predictions", 3)])
    now[0] += 2.0
    for template in templates:
        record = logged(template, TP("predictions", 3))
        assert record.levelno == logging.INFO and record.levelname == "INFO"
        assert record.getMessage().endswith("[assigned 2 s ago, at a rebalance]")
    assert logged(templates[0], TP("predictions", 2)).levelno == logging.ERROR  # not assigned
    other = logged("Aiokafka stopped fetching from %r (last done %s)", TP("predictions", 3))
    assert other.levelno == logging.ERROR  # a complaint measured from its last fetch
    now[0] += 300.0
    assert logged(templates[0], TP("predictions", 3)).levelno == logging.ERROR  # overdue
