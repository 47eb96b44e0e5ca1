"""The study lock: one worker at a time creates a trial, so a study's trial count is exact on every storage."""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .storage import StorageTarget


class StudyLock:
    """Mutual exclusion between every worker of one study: an ``fcntl`` file lock beside a journal or SQLite file,
    a PostgreSQL advisory lock keyed by the study. :meth:`acquire` and :meth:`release` may happen in different
    places (taken before a trial is created, released as soon as it exists); releasing a free lock does nothing."""

    def __init__(self, target: StorageTarget, study: str) -> None:
        self.target, self.held = target, False
        self._key = int.from_bytes(hashlib.blake2b(f"trickbox:{study}".encode(), digest_size=8).digest(), "big",
                                   signed=True)
        self._conn: Any = None
        self._fh: Any = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _sql(self, query: str) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        if self._conn is None:
            self._conn = create_engine(self.target.url, poolclass=NullPool).connect()
        self._conn.execute(text(query), {"k": self._key})
        self._conn.commit()

    def acquire(self) -> None:
        if self.held:
            return
        if self.target.kind == "postgresql":
            self._sql("SELECT pg_advisory_lock(:k)")
        else:
            import fcntl

            assert self.target.lock_file is not None
            self.target.lock_file.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.target.lock_file, "a+")
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._fh is not None:
            self._fh.close()  # closing the file releases the fcntl lock
            self._fh = None
            return
        try:
            self._sql("SELECT pg_advisory_unlock(:k)")
        except Exception:  # a dropped connection releases the lock anyway
            self.close()

    def close(self) -> None:
        self.release()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``path`` (released when the process dies)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield


