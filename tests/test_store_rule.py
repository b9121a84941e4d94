"""The store runs every statement (issue 13 point 1), kept true by reading the source.

Every module under ``src/`` is parsed; a reference to a statement-sending method of a
connection, pool, prepared statement or cursor (``conn.execute``, ``pool.fetch``,
``cur.fetchone``, ``conn.copy_to_table``, called or not) is allowed only in the store modules
below. Anywhere else, the statement belongs in a store method named for what it does.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# The modules that may send statements, relative to src/, and why each is one.
STORE_MODULES = {
    "soniq/store.py": "pool, schema check, enqueue and inspection statements",
    "soniq/worker_store.py": "the worker's round trip, liveness, LISTEN and heartbeat",
    "soniq/store_admin.py": "managing jobs",
    "soniq/control_store.py": "job control",
    "soniq/schedules/store.py": "schedules",
    "soniq/enqueue_connection.py": "the one kept enqueue connection (prepared statements)",
    "soniq/sync_store.py": "the sync side's psycopg pool and a caller's sync connection",
    "soniq/connections.py": "the driver layer: runs what a store hands it on a caller's connection",
    "soniq/schema.py": "the qualifying asyncpg connection class (overrides execute/fetch*)",
    # CREATE/DROP DATABASE go to the server's maintenance database, where no Soniq store
    # exists (no schema, no pool): the testing kit's provisioning sends them itself.
    "soniq/testing/postgres.py": "the testing kit's server: CREATE/DROP DATABASE",
}
# Not listed though DEVELOPERS.md counts them among the stores: fleet_role.py holds its lock
# through Store.hold_advisory_lock, and migrations.py is statement text Store.setup runs.

# asyncpg (Connection, Pool, PreparedStatement) and psycopg (Cursor, Connection).
_EXACT = {"execute", "executemany", "prepare"}
_PREFIXES = ("fetch", "copy_")  # fetch/fetchval/fetchrow/fetchone/...; copy_to_table/...
_NOT_STATEMENTS = {"copy_context"}  # contextvars.copy_context()


def sends_statement(attribute: str) -> bool:
    if attribute in _NOT_STATEMENTS:
        return False
    return attribute in _EXACT or attribute.startswith(_PREFIXES)


def statement_sites(source: str) -> list[tuple[int, str]]:
    """``(line, method)`` of every statement-sending method referenced in ``source``."""
    return sorted(
        (node.lineno, node.attr)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and sends_statement(node.attr)
    )


def modules() -> dict[str, str]:
    return {path.relative_to(SRC).as_posix(): path.read_text() for path in SRC.rglob("*.py")}


def test_the_detector_sees_statements_and_nothing_else() -> None:
    source = """
async def f(conn, pool, cur, stmt):
    await conn.execute("SELECT 1")
    rows = await pool.fetch("SELECT 1")
    run = conn.fetchrow  # sent later through an alias
    cur.fetchone()
    await stmt.executemany([])
    await conn.copy_records_to_table("t", records=[])
    contextvars.copy_context()
    store.finish_and_claim()
    data.copy()
"""
    assert [method for _, method in statement_sites(source)] == [
        "execute",
        "fetch",
        "fetchrow",
        "fetchone",
        "executemany",
        "copy_records_to_table",
    ]


def test_only_the_store_modules_send_statements() -> None:
    found = modules()
    assert len(found) > 50, f"no source found under {SRC}"
    outside = [
        f"{path}:{line}: .{method}"
        for path, source in sorted(found.items())
        if path not in STORE_MODULES
        for line, method in statement_sites(source)
    ]
    assert not outside, (
        "statements sent outside the store modules; give each a store method named for what "
        "it does (or, for a new store module, add it to STORE_MODULES with why):\n"
        + "\n".join(outside)
    )


def test_every_store_module_listed_exists_and_sends_statements() -> None:
    # Keeps the allow-list no wider than needed: a module renamed, or one that stopped sending
    # statements, leaves the list.
    found = modules()
    idle = [path for path in STORE_MODULES if not statement_sites(found.get(path, ""))]
    assert not idle, f"listed as store modules but sending no statements: {idle}"
