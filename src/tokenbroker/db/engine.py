"""Engine creation: one URL form for operators, the right async driver underneath."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry


def async_url(url: str) -> str:
    """``sqlite:///x.db`` → aiosqlite, ``postgresql://`` → asyncpg; explicit drivers are kept."""
    parsed = make_url(url)
    if parsed.drivername in {"sqlite", "sqlite+pysqlite"}:
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    full = async_url(url)
    if is_sqlite(full):
        engine = create_async_engine(full, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        full, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def create_blocking_sqlite_engine(url: str) -> Engine:
    """A synchronous engine on an SQLite file, for code that runs a whole transaction in one
    worker thread (the audit writer process): aiosqlite hands every call of a statement to its
    thread and back, a dozen hand-offs per commit that cost more than the commit itself."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError("a blocking engine is only made for SQLite")
    parsed = parsed.set(drivername="sqlite+pysqlite")
    # The pool hands a connection to whichever executor thread runs the next commit.
    engine = create_sync_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers proceed during a write; busy_timeout makes concurrent writers (several
    # worker processes on one file) wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
