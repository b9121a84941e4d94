"""System programs the tests run (a real Prometheus, promtool, ...), found on PATH or skipped.

A newcomer's machine has Python and pip, not every Debian package CI installs: a test needing a
program it lacks skips and says which package brings it. CI must never skip such a test
silently, so ``.ci/run`` installs the packages and sets ``SONIQ_REQUIRE_SYSTEM_PROGRAMS=1``,
under which a missing program fails the test instead.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: Set to 1 (as ``.ci/run`` does) to fail, not skip, a test whose program is missing.
REQUIRE_ENV = "SONIQ_REQUIRE_SYSTEM_PROGRAMS"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


# Where Debian puts daemons (pgbouncer), which a non-root user's PATH lacks.
_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


def find_program(name: str) -> str | None:
    """The path of program ``name``: on PATH, else in the sbin folders."""
    return shutil.which(name) or shutil.which(name, path=_SBIN)


def require_program(name: str, package: str) -> str:
    """The path of program ``name``; skip the calling test (or fixture) if it is not on PATH
    (or in an sbin folder), naming the Debian ``package`` that provides it, or fail when CI
    requires every program."""
    found = find_program(name)
    if found:
        return found
    reason = (
        f"{name!r} is not on PATH: install the Debian package {package!r} "
        f"(apt-get install {package}; .ci/run does)"
    )
    if required():
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)
