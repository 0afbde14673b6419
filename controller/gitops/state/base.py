"""The connection every part of the store shares, and its transactions."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controller.gitops.state.schema import open_database

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StoreBase:
    """One SQLite file (WAL mode), safe to open from several processes at once."""

    def __init__(self, path: str | Path, *, clock: Clock = utcnow) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = open_database(self.path)

    def close(self) -> None:
        self._db.close()

    def now(self) -> dt.datetime:
        return self._clock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, query: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            return list(self._db.execute(query, params).fetchall())
