"""A real PgBouncer in transaction mode in front of the test PostgreSQL, started for a test."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.programs import require_program


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pgbouncer(database_url: str, *, pool_size: int = 3) -> Iterator[str]:
    """Run PgBouncer (pool_mode=transaction, ``pool_size`` server connections per database and
    user, so clients share few server sessions) in front of ``database_url``'s server; yields
    the same URL through PgBouncer."""
    program = require_program("pgbouncer", "pgbouncer")
    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    port = _free_port()
    # PgBouncer will not run as root: it switches to another user, which must be able to read
    # its files and write its log, so they go in a folder of that user's (not pytest's, 0700).
    folder = Path(tempfile.mkdtemp(prefix="soniq-pgbouncer-"))
    run_as = None
    if os.geteuid() == 0:
        run_as = "postgres" if _user_exists("postgres") else "nobody"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={parts.hostname or '127.0.0.1'} port={parts.port or 5432}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 200\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
        "server_reset_query =\n"
    )
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        for path in (folder, *folder.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    command = [program, *(["-u", run_as] if run_as else []), str(folder / "pgbouncer.ini")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    log = (folder / "pgbouncer.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"pgbouncer did not start: {out}\n{log}") from None
                time.sleep(0.05)
        netloc = f"{user}@127.0.0.1:{port}"
        yield urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
