"""Log records for the log layer's own events, made without ``Logger.makeRecord``.

``makeRecord`` builds every attribute of a record anew (the caller's path, file and module
names, the process and its name, the thread), which is most of what a record costs before it
reaches a handler: about 3.5 us against 1.2 us here. The layer logs the same few events over
and over from one place, so everything but the time and the thread is the same each time. A
record of each (logger, level, message) is made once by ``LogRecord`` itself and kept as a
template; a new record is a copy of it with the time and the thread filled in. It is a real
``logging.LogRecord``, with every standard attribute a formatter or filter may read, in the
order ``LogRecord`` sets them.

A forked child starts with no templates (its process id differs, and asking for the id on every
record would be a system call per line). When the application set
its own record factory (``logging.setLogRecordFactory``), its factory makes every record, as
``Logger.makeRecord`` would.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

_LogRecord = logging.LogRecord
_new = object.__new__
# (logger name, level, message, logging's process switches) -> (a record's attributes, the
# time logging started at).
_templates: dict[tuple[str, int, str, bool, bool], tuple[dict[str, Any], float]] = {}


def make_record(logger: logging.Logger, level: int, message: str) -> logging.LogRecord:
    """A record of ``message`` at ``level`` for ``logger``, from this module, without any
    ``extra`` fields yet: the caller sets them in ``record.__dict__`` and hands the record to
    ``logger.handle`` (its filters, handlers and propagation apply as with ``logger.log``)."""
    if logging.getLogRecordFactory() is not _LogRecord:
        return logger.makeRecord(logger.name, level, __file__, 0, message, (), None, "__call__")
    # The process attributes follow logging's switches, as LogRecord's would.
    key = (logger.name, level, message, logging.logProcesses, logging.logMultiprocessing)
    found = _templates.get(key)
    if found is None:
        found = _templates[key] = _template(logger.name, level, message)
    template, started = found
    now = time.time()
    values = template.copy()
    values["created"] = now
    values["msecs"] = int((now - int(now)) * 1000) + 0.0
    values["relativeCreated"] = (now - started) * 1000
    if logging.logThreads:
        values["thread"] = threading.get_ident()
        values["threadName"] = threading.current_thread().name
    if "taskName" in values and getattr(logging, "logAsyncioTasks", False):  # Python 3.12+
        values["taskName"] = _task_name()
    record: logging.LogRecord = _new(_LogRecord)
    record.__dict__ = values
    return record


def _template(name: str, level: int, message: str) -> tuple[dict[str, Any], float]:
    record = _LogRecord(name, level, __file__, 0, message, (), None, "__call__")
    return dict(vars(record)), record.created - record.relativeCreated / 1000


def _forget_templates() -> None:
    _templates.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, where there is no fork
    os.register_at_fork(after_in_child=_forget_templates)


def _task_name() -> str | None:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        name: str = asyncio.current_task().get_name()
    except Exception:  # no running loop or task: LogRecord leaves it None too
        return None
    return name
