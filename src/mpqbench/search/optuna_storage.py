"""Open an Optuna storage from one string, with errors that say what was wrong.

Accepted forms (DESIGN.md section 8):

- ``None``: in-memory (the study lives as long as the call; nothing resumes).
- an SQLAlchemy database URL, opened as Optuna's ``RDBStorage``: ``sqlite:///rel/path.db``,
  ``sqlite:////abs/path.db``, ``postgresql://user:pass@host:5432/db``,
  ``mysql+pymysql://...`` (the database driver must be installed). SQLite takes one writer
  at a time: use it for a single worker that may be resumed, never for parallel workers.
- ``journal:PATH``: Optuna's ``JournalStorage`` over an append-only log file
  (``JournalFileBackend``), for parallel workers on a shared file system without a database
  server. The file is created if missing; its directory must exist.

Heartbeats (``heartbeat_interval``, RDB storages only): each running trial records a
heartbeat; a trial whose worker died is marked failed once its heartbeat is older than
``grace_period`` (default ``2 * heartbeat_interval``) and, with ``max_retry > 0``, re-queued
with the same parameters by ``RetryHeartbeatStaleTrialCallback``, so no allocation is lost.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend

logger = logging.getLogger(__name__)

#: Prefix that selects a JournalStorage log file.
JOURNAL_PREFIX = "journal:"

_HELP = (
    "expected an SQLAlchemy database URL (e.g. 'sqlite:///study.db', "
    "'postgresql://user@host/db') or 'journal:PATH' for a JournalStorage log file"
)


def redact(url: str | None) -> str:
    """The storage string with any password replaced by ``***`` (for logs and records)."""
    if url is None:
        return "in-memory"
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: no reliable way to find its password
        return "<unparsable storage URL>"


def open_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 2,
) -> BaseStorage | None:
    """Open the storage ``url`` names (see the module docstring for the accepted forms).

    Args:
        url: None (in-memory), an SQLAlchemy URL, or ``journal:PATH``.
        heartbeat_interval: seconds between heartbeats of a running trial (RDB only);
            None disables heartbeats.
        grace_period: seconds without a heartbeat after which a trial counts as dead
            (default ``2 * heartbeat_interval``).
        max_retry: how often a dead trial's parameters are re-queued (heartbeats only).

    Returns:
        A storage object for ``optuna.create_study``, or None for in-memory.

    Raises:
        ValueError: an empty or unparsable URL, an unknown database dialect, a missing
            database driver, a database that cannot be opened or reached, a journal path
            whose directory does not exist, or heartbeats asked of a non-RDB storage. The
            message quotes the URL (password hidden).
    """
    if heartbeat_interval is not None and heartbeat_interval < 1:
        raise ValueError(f"heartbeat_interval must be >= 1 second, got {heartbeat_interval}")
    if url is None:
        if heartbeat_interval is not None:
            raise ValueError("heartbeats need a database storage URL; the storage is in-memory")
        return None
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"optuna storage {url!r}: {_HELP}")
    if url.startswith(JOURNAL_PREFIX):
        if heartbeat_interval is not None:
            raise ValueError(
                f"optuna storage {url!r}: heartbeats are supported by database (RDB) storages "
                "only, not by JournalStorage"
            )
        return _open_journal(url)
    return _open_rdb(url, heartbeat_interval, grace_period, max_retry)


def _open_journal(url: str) -> JournalStorage:
    raw = url[len(JOURNAL_PREFIX) :]
    if not raw.strip():
        raise ValueError(f"optuna storage {url!r}: no file path after {JOURNAL_PREFIX!r}")
    path = Path(raw).expanduser()
    if path.is_dir():
        raise ValueError(f"optuna storage {url!r}: {path} is a directory, not a log file")
    if not path.parent.is_dir():
        raise ValueError(f"optuna storage {url!r}: directory {path.parent} does not exist")
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as exc:
        raise ValueError(f"optuna storage {url!r}: cannot open {path}: {exc}") from exc


def _open_rdb(
    url: str, heartbeat_interval: int | None, grace_period: int | None, max_retry: int
) -> RDBStorage:
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = redact(url)
    try:
        make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ValueError(f"optuna storage {url!r}: {_HELP}") from None
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs: dict[str, object] = {}
            if heartbeat_interval is not None:
                kwargs = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period or 2 * heartbeat_interval,
                    "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(
                        max_retry=max_retry
                    ),
                }
            return RDBStorage(url, **kwargs)  # type: ignore[arg-type]
    except sqlalchemy.exc.NoSuchModuleError:
        raise ValueError(f"optuna storage {shown!r}: unknown database dialect; {_HELP}") from None
    except ImportError as exc:
        raise ValueError(
            f"optuna storage {shown!r}: the database driver for this URL is not installed "
            f"({exc})"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"optuna storage {shown!r}: cannot open the database: {reason}") from None
    except optuna.exceptions.StorageInternalError as exc:
        raise ValueError(f"optuna storage {shown!r}: {exc}") from None


def supports_heartbeat(storage: BaseStorage | None) -> bool:
    """Whether ``storage`` records heartbeats (so dead workers' trials can be failed)."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


__all__ = ["JOURNAL_PREFIX", "open_storage", "redact", "supports_heartbeat"]
