"""Where a study lives: the storage, the journal watch, retries of crashed trials and the trial budget.

The lock that makes a study's trial count exact is :mod:`.locks`; who owns a running trial, :mod:`.leases`.

A journal file ``sweeps_out/<study>/journal.log`` by default (no server; one machine), or an Optuna RDB storage
(``--storage postgresql://...`` for many machines, ``sqlite:///...``). A crashed trial is failed and handed to
Optuna's ``RetryHeartbeatStaleTrialCallback`` (a WAITING copy, same parameters, resumed from the failed trial's
checkpoint): found by Optuna's heartbeats on RDB storages, and on the journal, which has none, by trickbox's reaper of
trials whose owner process on this host died or whose lease (renewed by the live worker) ran out on another host.
"""
from __future__ import annotations

import errno
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputError


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
            raise ConfigError("--storage sqlite needs a file (sqlite:///path/study.db); an in-memory database cannot "
                              "be shared")
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


def retry_history(trial: Any) -> list[int]:
    """The trials this one retries, oldest first (Optuna's ``RetryHeartbeatStaleTrialCallback.retry_history``)."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # experimental since Optuna 3.0; the attribute it reads has not changed since
        warnings.simplefilter("ignore", ExperimentalWarning)
        return list(RetryHeartbeatStaleTrialCallback.retry_history(trial))


class StaleRetry:
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` (a WAITING copy, same parameters, at most ``max_retry``; the
    failed trial's intermediate values go with it, so a retry resumed from a checkpoint keeps the epochs it had
    reported), saying what it does."""

    def __init__(self, max_retry: int | None, reason: str) -> None:
        self.max_retry, self.reason = max_retry, reason

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        done = len(retry_history(trial))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning
            RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry, inherit_intermediate_values=True)(study, trial)
        again = self.max_retry is None or done < self.max_retry
        print(f"trickbox sweep: trial {trial.number} failed: {self.reason}; "
              + ("it is retried with the same parameters" if again
                 else f"retried {done} times already, not again (retries: {self.max_retry})"),
              file=sys.stderr, flush=True)


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
    return OutputError(f"the study journal {target.journal} was {what} while the sweep ran; the trials' run "
                       f"directories under {study_dir} are intact but the study's record is not: restore the journal "
                       "from a copy and run again, or start a new study with --study NAME")


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
        from_journal = (any(f"optuna{os.sep}storages{os.sep}journal" in f for f in frames)
                        or str(target.journal) in str(exc))
        if from_journal and isinstance(exc, OSError) and exc.errno in UNWRITABLE and target.journal.exists():  # type: ignore[union-attr]
            return OutputError(f"the study journal {target.journal} cannot be written ({exc.strerror or exc}); it is "
                               f"intact up to its last complete line, and so are the trials' run directories under "
                               f"{study_dir}: make it writable (or free space) and run the same command again; the "
                               "trials it still shows as running are taken up then")
        if isinstance(exc, (ValueError, OSError)) and from_journal:
            return journal_error(target, study_dir, "damaged (a cut or garbled line)"
                                 if target.journal.exists() else "deleted")  # type: ignore[union-attr]
        exc = exc.__cause__ or exc.__context__
    return None


def budget_used(trials: list[Any]) -> int:
    """Trials that count against ``n_trials``: all but FAILED trials that a retry replaced."""
    from optuna.trial import TrialState

    replaced = {n for t in trials for n in retry_history(t)}
    replaced |= {t.user_attrs["retry_of"] for t in trials if t.user_attrs.get("retry_of") is not None}
    return sum(1 for t in trials if t.state != TrialState.FAIL or t.number not in replaced)
