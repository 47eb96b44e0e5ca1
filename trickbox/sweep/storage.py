"""Where a study lives, the lock that makes its trial count exact, and the rules for crashed trials.

Storage. Without ``--storage`` a study is an Optuna journal file
``sweeps_out/<study>/journal.log`` (``JournalStorage(JournalFileBackend)``):
no server, safe for several processes on one machine. ``--storage
postgresql://...`` (or ``sqlite:///...``) is an Optuna RDB storage that
workers on many machines can share.

Exact count. Creating a trial and deciding whether the budget allows one
happen together under one lock: a file lock (``fcntl``) next to the journal
or SQLite file, a PostgreSQL advisory lock for PostgreSQL. So N workers
never start more than ``n_trials`` trials, and trial numbers have no gaps.

Budget rule. ``n_trials`` counts the trials that used the budget: COMPLETE,
PRUNED, RUNNING, WAITING and FAILED trials that were *not* replaced by a
retry. A crashed trial that is retried is replaced by its retry, so a crash
costs no budget and no trial is lost.

Crashes. Every running trial records its owner (host, PID, process start
time). Any worker on that host, at start-up and between trials, marks a
RUNNING trial whose owner process is gone as FAILED and enqueues a retry
with the same parameters (user attrs ``retry_of`` and ``resume_dir``). RDB
storages also run Optuna's heartbeats (``heartbeat_interval`` /
``grace_period``) so a trial whose machine vanished is failed and retried the
same way, by any worker on any machine.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..trick import ConfigError

HOST_ENV = "TRICKBOX_SWEEP_HOST"
"""Override the host name recorded as a trial's owner (containers that share a host name)."""


@dataclass(frozen=True)
class StorageTarget:
    """A resolved ``--storage``: kind, URL (or journal path) and the lock file, if any."""

    kind: str  # "journal" | "postgresql" | "sqlite"
    url: str
    journal: Path | None = None
    lock_file: Path | None = None

    @property
    def shared(self) -> bool:
        """Workers on other machines can join (an RDB server)."""
        return self.kind == "postgresql"

    def display(self) -> str:
        if self.kind == "journal":
            return str(self.journal)
        return _hide_password(self.url)


def _hide_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in cred else ''}@{host}"


def resolve_storage(url: str | None, study_dir: Path) -> StorageTarget:
    """``None`` → the study's journal; a path → a journal there; a URL → an RDB storage."""
    if not url:
        path = (study_dir / "journal.log").resolve()
        return StorageTarget("journal", str(path), path, path.with_name(path.name + ".trickbox.lock"))
    if "://" not in url:
        path = Path(url).expanduser().resolve()
        return StorageTarget("journal", str(path), path, path.with_name(path.name + ".trickbox.lock"))
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        rest = url.split("://", 1)[1]
        driver = url.split("://", 1)[0].partition("+")[2] or _postgres_driver()
        return StorageTarget("postgresql", f"postgresql+{driver}://{rest}" if driver else f"postgresql://{rest}")
    if scheme == "sqlite":
        db = url.split("://", 1)[1].lstrip("/")
        if not db or db == ":memory:":
            raise ConfigError("--storage sqlite needs a file (sqlite:///path/study.db); an in-memory database cannot be shared")
        path = Path("/" + db) if url.startswith("sqlite:////") else Path(db)
        path = path.resolve()
        return StorageTarget("sqlite", f"sqlite:///{path}", None, path.with_name(path.name + ".trickbox.lock"))
    raise ConfigError(
        f"--storage {_hide_password(url)!r}: scheme {scheme!r} is not supported; use postgresql://USER@HOST/DB "
        "(many machines), sqlite:///FILE, or a journal file path (one machine; the default)"
    )


def _postgres_driver() -> str:
    """The installed PostgreSQL driver SQLAlchemy should use (it defaults to psycopg 3, which may be missing)."""
    import importlib.util

    for name in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(name) is not None:
            return name
    raise ConfigError("--storage postgresql:// needs a PostgreSQL driver: pip install psycopg2-binary (or psycopg)")


def open_storage(target: StorageTarget, *, heartbeat: tuple[int, int] | None = None, on_stale: Any = None) -> Any:
    """The Optuna storage object for ``target``; RDB storages get heartbeats when ``heartbeat`` is given."""
    if target.kind == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        assert target.journal is not None
        target.journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(target.journal)))
    from optuna.storages import RDBStorage

    if target.lock_file is not None:
        target.lock_file.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1], "heartbeat_stale_trial_callback": on_stale}
    for attempt in range(8):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return RDBStorage(target.url, engine_kwargs={"pool_pre_ping": True}, **kwargs)
        except Exception as exc:
            text = str(exc)
            # Workers that open a new database at the same moment race to create Optuna's tables;
            # the loser sees them half-made. Once they exist, opening again succeeds.
            racing = "already exists" in text or "duplicate key" in text or "UniqueViolation" in text
            if racing and attempt < 7:
                time.sleep(0.25 * (attempt + 1))
                continue
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise ConfigError(f"cannot open storage {target.display()}: {first}") from None
    raise AssertionError("unreachable")


# -- the study lock -------------------------------------------------------------
class StudyLock:
    """Mutual exclusion between every worker of one study (file lock or PostgreSQL advisory lock)."""

    def __init__(self, target: StorageTarget, study: str) -> None:
        self.target = target
        self.study = study
        self._conn: Any = None
        self._fh: Any = None
        self._depth = 0
        self.key = int.from_bytes(hashlib.blake2b(f"trickbox:{study}".encode(), digest_size=8).digest(), "big", signed=True)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._acquire()
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._release()

    def _acquire(self) -> None:
        if self.target.kind == "postgresql":
            from sqlalchemy import create_engine, text
            from sqlalchemy.pool import NullPool

            if self._conn is None:
                engine = create_engine(self.target.url, poolclass=NullPool)
                self._conn = engine.connect()
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._conn.commit()
            return
        import fcntl

        path = self.target.lock_file
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a+")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)

    def _release(self) -> None:
        if self.target.kind == "postgresql":
            from sqlalchemy import text

            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
            except Exception:  # a dropped connection releases the lock anyway
                self.close()
            return
        import fcntl

        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def close(self) -> None:
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
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- owners --------------------------------------------------------------------
def host_id() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of ``pid`` from /proc, or ``None`` off Linux / when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2:].split()
    try:
        return rest[0], int(rest[19])
    except (IndexError, ValueError):
        return None


def owner_record(worker: str) -> dict[str, Any]:
    """Who runs a trial: this host, PID and process start time (guards against PID reuse)."""
    stat = _proc_stat(os.getpid())
    return {"host": host_id(), "pid": os.getpid(), "start": stat[1] if stat else None, "worker": worker}


def owner_alive(owner: Any) -> bool | None:
    """``False`` when the owner process on this host is gone, ``None`` when it is on another host."""
    if not isinstance(owner, dict) or owner.get("host") != host_id():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return None
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        if state in ("Z", "X"):
            return False
        return owner.get("start") in (None, start)
    if Path("/proc").is_dir() and Path("/proc/self/stat").exists():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- budget and retries ------------------------------------------------------------
def budget_used(trials: list[Any]) -> int:
    """Trials that count against ``n_trials``: all but FAILED trials that a retry replaced."""
    from optuna.trial import TrialState

    replaced = {t.user_attrs.get("retry_of") for t in trials if t.user_attrs.get("retry_of") is not None}
    return sum(1 for t in trials if t.state != TrialState.FAIL or t.number not in replaced)


def retry_trial(study: Any, failed: Any, *, max_retries: int, reason: str) -> int | None:
    """Enqueue a WAITING copy of ``failed`` (same parameters, ``retry_of``/``resume_dir`` set); its number, or ``None``."""
    import optuna
    from optuna.trial import TrialState

    depth = int(failed.user_attrs.get("retry_depth", 0))
    if depth >= max_retries:
        print(f"trickbox sweep: trial {failed.number} failed ({reason}) and was retried {depth} times already; "
              f"not retrying (retries: {max_retries})", file=sys.stderr)
        return None
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("retry_of") == failed.number:
            return None  # someone retried it already
    user_attrs = {"retry_of": failed.number, "retry_depth": depth + 1, "retry_reason": reason,
                  "resume_dir": failed.user_attrs.get("run_dir")}
    history = list(failed.system_attrs.get("retry_history", [])) + [failed.number]
    system_attrs = {k: v for k, v in failed.system_attrs.items() if k in ("grid_id", "search_space")}
    system_attrs.update(failed_trial=history[0], retry_history=history)
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
        user_attrs=user_attrs, system_attrs=system_attrs,
    ))
    waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if t.user_attrs.get("retry_of") == failed.number]
    return waiting[-1].number if waiting else None


def tell(study: Any, number: int, **kwargs: Any) -> None:
    """``study.tell`` outside ``optimize``: the grid sampler's ``study.stop()`` there is harmless, ignore it."""
    try:
        study.tell(number, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise
