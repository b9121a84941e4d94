"""The log layer's records are made from a template (soniq.logs.records), not by
``Logger.makeRecord``: they must still be whole, current ``LogRecord``s."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator

import pytest

from soniq.logs.records import make_record

log = logging.getLogger("soniq.jobs.records-test")


def test_a_record_has_every_attribute_logrecord_sets_in_its_order() -> None:
    before = time.time()
    record = make_record(log, logging.INFO, "Job done")
    reference = log.makeRecord(log.name, logging.INFO, "x.py", 0, "Job done", (), None, "f")
    assert type(record) is logging.LogRecord
    assert list(vars(record)) == list(vars(reference))
    assert record.getMessage() == "Job done" and record.levelname == "INFO"
    assert record.name == log.name and record.process == reference.process
    assert before <= record.created <= time.time()
    assert abs(record.relativeCreated - reference.relativeCreated) < 1000
    assert record.msecs == int((record.created - int(record.created)) * 1000)
    assert record.thread == threading.get_ident()


def test_each_record_carries_its_own_time_and_thread() -> None:
    first = make_record(log, logging.INFO, "Job done")
    first.__dict__["job_id"] = "a"
    seen: list[logging.LogRecord] = []
    thread = threading.Thread(
        target=lambda: seen.append(make_record(log, logging.INFO, "Job done")), name="other"
    )
    thread.start()
    thread.join()
    second = make_record(log, logging.INFO, "Job done")
    assert "job_id" not in vars(second), "fields set on one record leak into the next"
    assert seen[0].threadName == "other" and seen[0].thread != first.thread
    assert second.created >= first.created


@pytest.fixture
def custom_factory() -> Iterator[None]:
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        record.__dict__["service"] = "billing"
        return record

    logging.setLogRecordFactory(factory)
    yield
    logging.setLogRecordFactory(previous)


def test_an_application_record_factory_makes_the_records(custom_factory: None) -> None:
    record = make_record(log, logging.INFO, "Job done")
    assert record.__dict__["service"] == "billing"


def test_no_thread_when_logging_is_told_not_to_record_threads() -> None:
    logging.logThreads = False
    try:
        record = make_record(log, logging.WARNING, "Job done")
    finally:
        logging.logThreads = True
    assert record.thread is None and record.threadName is None


def _child_pid(queue: multiprocessing.Queue[tuple[int | None, int]]) -> None:
    import os

    queue.put((make_record(log, logging.INFO, "Job done").process, os.getpid()))


def test_a_forked_child_names_its_own_process() -> None:
    make_record(log, logging.INFO, "Job done")  # the parent's template exists
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[tuple[int | None, int]] = context.Queue()
    child = context.Process(target=_child_pid, args=(queue,))
    child.start()
    recorded, actual = queue.get(timeout=30)
    child.join(timeout=30)
    assert recorded == actual


def test_logged_times_show_the_digits_round_would() -> None:
    import random

    from soniq.logs.middleware import _round3

    chance = random.Random(20)
    for scale in (0.001, 1.0, 250.0, 86_400_000.0):
        for _ in range(20_000):
            ms = chance.random() * scale
            assert _round3(ms) == round(ms, 3), ms
    assert _round3(0.0) == 0.0 and _round3(12.3456) == 12.346


def test_no_process_when_logging_is_told_not_to_record_processes() -> None:
    assert make_record(log, logging.INFO, "Job done").process is not None
    logging.logProcesses = False
    try:
        record = make_record(log, logging.INFO, "Job done")
    finally:
        logging.logProcesses = True
    assert record.process is None
    assert make_record(log, logging.INFO, "Job done").process is not None
