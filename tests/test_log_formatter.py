"""soniq.logs.JsonFormatter: one compact ASCII JSON object per record, whatever the fields
hold (orjson writes most lines; what it refuses or cannot keep ASCII goes to the stdlib)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import uuid
from datetime import datetime, timezone
from typing import Any

from soniq.logs import JsonFormatter


def line_of(message: str = "Job done", formatter: JsonFormatter | None = None, **extra: Any) -> str:
    record = logging.getLogger("soniq.jobs").makeRecord(
        "soniq.jobs", logging.INFO, __file__, 1, message, (), None, "f", extra
    )
    return (formatter or JsonFormatter()).format(record)


def test_a_line_is_compact_with_the_timestamp_first() -> None:
    line = line_of(job_id="a", attempt=2, queue_wait_ms=1.5, outcome="done")
    assert ": " not in line and ", " not in line
    data = json.loads(line)
    assert list(data)[:4] == ["timestamp", "level", "logger", "message"]
    assert data["timestamp"].endswith("+00:00")
    assert data["job_id"] == "a" and data["attempt"] == 2 and data["queue_wait_ms"] == 1.5


def test_other_characters_are_escaped_so_lines_stay_ascii() -> None:
    line = line_of("Café ✓", city="Zürich")
    assert line.isascii()
    data = json.loads(line)
    assert data["message"] == "Café ✓" and data["city"] == "Zürich"
    assert ": " not in line, "the stdlib's lines are as compact as orjson's"


def test_values_orjson_refuses_still_make_a_line() -> None:
    huge = 2**70
    data = json.loads(line_of(big=huge, by_attempt={1: "a", 2: "b"}))
    assert data["big"] == huge
    assert data["by_attempt"] == {"1": "a", "2": "b"}


@dataclasses.dataclass
class Point:
    x: int


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_dates_uuids_dataclasses_and_unknown_objects_are_encoded() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    ident = uuid.UUID("0193b2c4-1234-7abc-8def-0123456789ab")
    data = json.loads(line_of(when=when, ident=ident, point=Point(3), thing=Opaque()))
    assert data["when"] == "2026-01-02T03:04:05.678901+00:00"
    assert data["ident"] == str(ident)
    assert data["point"] == {"x": 3}
    assert "opaque" in data["thing"]


def test_a_traceback_is_one_string_field() -> None:
    try:
        raise ValueError("bad input")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    data = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad input" in data["exception"]


def test_options_take_python_json_loggers_path_and_stay_compact() -> None:
    line = line_of(formatter=JsonFormatter(static_fields={"service": "billing"}), job_id="a")
    data = json.loads(line)
    assert data["service"] == "billing" and data["job_id"] == "a" and data["level"] == "INFO"
    assert ": " not in line


def test_the_timestamp_is_the_records_time_in_utc_to_the_microsecond() -> None:
    import random

    formatter = JsonFormatter()
    chance = random.Random(5)
    for _ in range(20_000):
        created = 1_700_000_000 + chance.random() * 50_000_000
        wanted = datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="microseconds")
        assert formatter._timestamp(created) == wanted, created
