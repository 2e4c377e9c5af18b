"""Faults of the store file, its directory and the disk, as one line for an operator."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path


class StoreError(Exception):
    """The database is unusable (corrupt, from a newer version, or the disk failed)."""


class StoreFull(StoreError):
    """A write failed because the disk (or the file system holding the store) is full.

    Nothing of the failed transaction is stored; the same batches can be applied again once
    there is space.
    """


# SQLite's primary result codes (sqlite3.h) that say what is wrong with the file or its place.
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 3, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26
_FAULTS = frozenset({_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT})
_FAULTS |= {_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB}
# Below this much free space the node does not start: its first commits would fail.
MIN_FREE_BYTES = 128 * 1024
_MOVE_ASIDE = "restore it from a backup, or move it aside to start with an empty store"


def _store_error(path: Path, exc: sqlite3.Error | OSError) -> StoreError:
    """One line for an operator: the file, what is wrong, what to do."""
    if isinstance(exc, OSError):
        return StoreError(
            f"{path}: cannot create or open the store ({exc.strerror or exc}): fix the permissions "
            f"of {path.parent} (the node writes the store and its -wal/-shm files there)"
        )
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    what = str(exc)
    if code == _SQLITE_FULL:
        return StoreFull(f"{path}: the disk is full ({what}): free space on {path.parent}")
    if code == _SQLITE_CORRUPT:
        return StoreError(f"{path}: the store is damaged ({what}): {_MOVE_ASIDE}")
    if code == _SQLITE_NOTADB:
        return StoreError(f"{path}: not a relay store (not an SQLite database): {_MOVE_ASIDE}")
    if code in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN):
        return StoreError(
            f"{path}: cannot write the store ({what}): fix the permissions of the file and of "
            f"{path.parent} (the node writes the store and its -wal/-shm files there)"
        )
    if code == _SQLITE_IOERR:
        return StoreError(f"{path}: disk I/O error ({what}): check the disk, then {_MOVE_ASIDE}")
    return StoreError(f"{path}: {what}")


def _is_fault(exc: sqlite3.Error) -> bool:
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    return code in _FAULTS


def _check_place(path: Path) -> bool:
    """Refuse clearly before SQLite gives its vaguer "unable to open database file".

    Returns whether the store file exists with 0 bytes.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _store_error(path, exc) from exc
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"{path}: the directory {path.parent} is read-only for this user: fix its "
            "permissions (the node writes the store and its -wal/-shm files there)"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"{path}: the store file is not readable and writable: fix its permissions"
        )
    free = shutil.disk_usage(path.parent).free
    if free < MIN_FREE_BYTES:
        raise StoreFull(
            f"{path}: the disk is full ({free // 1024} KiB free on {path.parent}): free space, "
            "then start the node again"
        )
    return path.is_file() and path.stat().st_size == 0
