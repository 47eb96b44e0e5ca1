"""Where a study lives, the lock that makes its trial count exact, and who owns a running trial.

A journal file ``sweeps_out/<study>/journal.log`` by default (no server; one machine), or an Optuna RDB storage
(``--storage postgresql://...`` for many machines, ``sqlite:///...``). A crashed trial is failed and handed to
Optuna's ``RetryHeartbeatStaleTrialCallback`` (a WAITING copy, same parameters, resumed from the failed trial's
checkpoint): found by Optuna's heartbeats on RDB storages, and on the journal, which has none, by trickbox's reaper of
trials whose owner process on this host died or whose lease (renewed by the live worker) ran out on another host.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputError

HOST_ENV = "TRICKBOX_SWEEP_HOST"
"""Override the host name recorded as a trial's owner (containers that share a host name)."""


@dataclass(frozen=True)
class StorageTarget:
    """A resolved ``--storage``: kind, URL (or journal path) and the lock file, if any."""

    kind: str  # "journal" | "postgresql" | "sqlite"
    url: str
    journal: Path | None = None
    lock_file: Path | None = None

    def display(self) -> str:
        return str(self.journal) if self.kind == "journal" else _hide_password(self.url)


def _hide_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':', 1)[0]}{':***' if ':' in cred else ''}@{host}"


def _lock_beside(path: Path) -> Path:
    return path.with_name(path.name + ".trickbox.lock")


def resolve_storage(url: str | None, study_dir: Path) -> StorageTarget:
    """``None`` → the study's journal; a path → a journal there; a URL → an RDB storage."""
    if not url or "://" not in url:
        path = (study_dir / "journal.log").resolve() if not url else Path(url).expanduser().resolve()
        return StorageTarget("journal", str(path), path, _lock_beside(path))
    scheme, rest = url.split("://", 1)
    base = scheme.split("+", 1)[0].lower()
    if base in ("postgresql", "postgres"):
        driver = scheme.partition("+")[2] or _postgres_driver()
        return StorageTarget("postgresql", f"postgresql+{driver}://{rest}")
    if base == "sqlite":
        db = rest.lstrip("/")
        if not db or db == ":memory:":
            raise ConfigError("--storage sqlite needs a file (sqlite:///path/study.db); an in-memory database cannot be shared")
        path = (Path("/" + db) if rest.startswith("//") else Path(db)).resolve()
        return StorageTarget("sqlite", f"sqlite:///{path}", None, _lock_beside(path))
    raise ConfigError(
        f"--storage {_hide_password(url)!r}: scheme {base!r} is not supported; use postgresql://USER@HOST/DB "
        "(many machines), sqlite:///FILE, or a journal file path (one machine; the default)"
    )


def _postgres_driver() -> str:
    """The installed PostgreSQL driver SQLAlchemy should use (it defaults to psycopg 3, which may be missing)."""
    import importlib.util

    for name in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(name) is not None:
            return name
    raise ConfigError("--storage postgresql:// needs a PostgreSQL driver: pip install psycopg2-binary (or psycopg)")


def open_storage(target: StorageTarget, *, heartbeat: tuple[int, int] | None = None, retries: int | None = None) -> Any:
    """The Optuna storage for ``target``; an RDB storage gets Optuna's heartbeats and retries when asked."""
    if target.kind == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        assert target.journal is not None
        target.journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(target.journal)))
    from optuna.storages import RDBStorage

    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1],
                  "heartbeat_stale_trial_callback": StaleRetry(retries, "it stopped sending heartbeats")}
    for attempt in range(8):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return RDBStorage(target.url, engine_kwargs={"pool_pre_ping": True}, **kwargs)
        except Exception as exc:
            text = str(exc)
            # Workers that open a new database at the same moment race to create Optuna's tables;
            # the loser sees them half-made. Once they exist, opening again succeeds.
            if any(s in text for s in ("already exists", "duplicate key", "UniqueViolation")) and attempt < 7:
                time.sleep(0.25 * (attempt + 1))
                continue
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise ConfigError(f"cannot open storage {target.display()}: {first}") from None
    raise AssertionError("unreachable")


class StaleRetry:
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` (a WAITING copy, same parameters, at most ``max_retry``),
    saying what it does."""

    def __init__(self, max_retry: int | None, reason: str) -> None:
        self.max_retry, self.reason = max_retry, reason

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        done = len(trial.system_attrs.get("retry_history", []))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning
            RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(study, trial)
        again = self.max_retry is None or done < self.max_retry
        print(f"trickbox sweep: trial {trial.number} failed: {self.reason}; " + ("it is retried with the same parameters"
              if again else f"retried {done} times already, not again (retries: {self.max_retry})"), file=sys.stderr, flush=True)


class JournalWatch:
    """Notices a journal deleted, replaced or cut under a running study, which Optuna reads on from silently (a
    recreated file holds only the logs written after it): :meth:`check` compares the file's identity, its size and
    the 64 bytes before the size last seen, and raises one line."""

    def __init__(self, target: StorageTarget, study_dir: Path) -> None:
        self.target, self.study_dir = target, study_dir
        self.seen = self._look()

    def _look(self, at: int | None = None) -> tuple[int, int, int, bytes] | None:
        try:
            with open(self.target.journal, "rb") as f:  # type: ignore[arg-type]
                st = os.fstat(f.fileno())
                f.seek(max(0, (st.st_size if at is None else at) - 64))
                return st.st_dev, st.st_ino, st.st_size, f.read(64 if at is None else min(64, at))
        except (FileNotFoundError, TypeError):
            return None

    def check(self) -> None:
        if self.target.kind == "journal" and self.seen is not None:
            now = self._look(self.seen[2])
            if now is None or now[:2] != self.seen[:2] or now[2] < self.seen[2] or now[3] != self.seen[3]:
                raise journal_error(self.target, self.study_dir, "deleted" if now is None else "replaced or cut")
            self.seen = self._look()


def journal_error(target: StorageTarget, study_dir: Path, what: str) -> OutputError:
    return OutputError(f"the study journal {target.journal} was {what} while the sweep ran; the trials' run directories "
                       f"under {study_dir} are intact but the study's record is not: restore the journal from a copy "
                       "and run again, or start a new study with --study NAME")


UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
"""Write failures that leave a journal intact: nothing is damaged, it only cannot grow."""


def journal_damage(target: StorageTarget, study_dir: Path, exc: BaseException | None) -> OutputError | None:
    """The one-line error for ``exc`` when it, or an exception it was raised while handling, comes from Optuna's
    journal reader (a cut line) or names the missing journal; ``None`` for anything else."""
    for _ in range(8):
        if exc is None or target.kind != "journal" or isinstance(exc, ConfigError):
            return None
        frames, tb = [], exc.__traceback__
        while tb is not None:
            frames, tb = frames + [tb.tb_frame.f_code.co_filename], tb.tb_next
        from_journal = any(f"optuna{os.sep}storages{os.sep}journal" in f for f in frames) or str(target.journal) in str(exc)
        if from_journal and isinstance(exc, OSError) and exc.errno in UNWRITABLE and target.journal.exists():  # type: ignore[union-attr]
            return OutputError(f"the study journal {target.journal} cannot be written ({exc.strerror or exc}); it is "
                               f"intact up to its last complete line, and so are the trials' run directories under "
                               f"{study_dir}: make it writable (or free space) and run the same command again; the "
                               "trials it still shows as running are taken up then")
        if isinstance(exc, (ValueError, OSError)) and from_journal:
            return journal_error(target, study_dir, "damaged (a cut or garbled line)" if target.journal.exists() else "deleted")  # type: ignore[union-attr]
        exc = exc.__cause__ or exc.__context__
    return None


def budget_used(trials: list[Any]) -> int:
    """Trials that count against ``n_trials``: all but FAILED trials that a retry replaced."""
    from optuna.trial import TrialState

    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    replaced |= {t.user_attrs["retry_of"] for t in trials if t.user_attrs.get("retry_of") is not None}
    return sum(1 for t in trials if t.state != TrialState.FAIL or t.number not in replaced)


# -- the study lock ---------------------------------------------------------------
class StudyLock:
    """Mutual exclusion between every worker of one study: an ``fcntl`` file lock beside a journal or SQLite file,
    a PostgreSQL advisory lock keyed by the study. :meth:`acquire` and :meth:`release` may happen in different
    places (taken before a trial is created, released as soon as it exists); releasing a free lock does nothing."""

    def __init__(self, target: StorageTarget, study: str) -> None:
        self.target, self.held = target, False
        self._key = int.from_bytes(hashlib.blake2b(f"trickbox:{study}".encode(), digest_size=8).digest(), "big", signed=True)
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


# -- owners and leases --------------------------------------------------------------
def host_id() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def _proc_start(pid: int) -> int | None:
    """The start time (clock ticks) of a live, non-zombie ``pid`` from /proc; ``None`` when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def owner_record(worker: str) -> dict[str, Any]:
    """Who runs a trial: this host, PID and process start time (guards against PID reuse)."""
    return {"host": host_id(), "pid": os.getpid(), "start": _proc_start(os.getpid()), "worker": worker}


def owner_gone(owner: Any, lease: Any, now: float) -> str | None:
    """Why a RUNNING trial's owner is gone (its process on this host died; its lease on another host ran out)."""
    if not isinstance(owner, dict):
        return None
    if owner.get("host") != host_id():
        if isinstance(lease, (int, float)) and now > lease:
            return f"its worker on {owner.get('host')} stopped renewing its lease ({now - lease:.0f} s ago)"
        return None
    pid = owner.get("pid")
    if isinstance(pid, int) and Path("/proc/self/stat").exists():
        start = _proc_start(pid)
        if start is None or owner.get("start") not in (None, start):
            return f"its worker (pid {pid} on {owner.get('host')}) died"
    return None


class Lease:
    """Renews a journal trial's ``lease`` user attribute every ``interval`` s (the lease lasts ``grace`` s)."""

    def __init__(self, trial: Any, interval: float, grace: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(trial, interval, grace), daemon=True)
        trial.set_user_attr("lease", time.time() + grace)
        self._thread.start()

    def _run(self, trial: Any, interval: float, grace: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):  # a blip must not kill the trial; the grace period covers it
                trial.set_user_attr("lease", time.time() + grace)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
