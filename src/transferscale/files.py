"""Small file helpers every layer may use (no torch, no numpy): hashing, atomic writes, and what to say when
the disk refuses a write."""
from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def with_path(err: OSError, path: str | os.PathLike) -> OSError:
    """`err` naming `path` when it names no file (a write into an open handle says only "No space left")."""
    if err.filename is not None or err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), os.fspath(path))  # the errno's subclass


def temp_beside(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, mode: int = 0o644,
                prefix: str | None = None) -> Path:
    """A temporary file beside `path`, filled by `write(handle)` and fsynced, for the caller to rename into
    place (several renames in a row: a file and its checksum). Whatever fails (a full disk, Ctrl-C), nothing is
    left behind, and an OSError names `path`. Its name is `prefix` (default ".NAME.") + random + ".tmp"."""
    import tempfile

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}." if prefix is None else prefix,
                                   suffix=".tmp")
    except OSError as err:
        raise with_path(err, path.parent) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # mkstemp's 0600 would hide a shared cache from other users
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise with_path(err, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def replace(tmp: Path, path: str | os.PathLike) -> None:
    """os.replace(tmp, path); when that fails, `tmp` is removed and the OSError names `path`."""
    try:
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise with_path(err, path) from None
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, mode: int = 0o644,
                 prefix: str | None = None) -> None:
    """Write `path` through `write(handle)`: a temporary file beside it, fsync, then a rename into place, so a
    reader sees the old file or the complete new one, and a failed write leaves nothing behind."""
    replace(temp_beside(path, write, mode=mode, prefix=prefix), path)


def write_problem(err: OSError, what: str = "") -> str:
    """One line saying which file operation failed, why, and what to change: for an OSError raised while a
    study writes its files (checkpoints, the feature cache, the store) or reads its inputs. `what` names the
    kind of file ("the results store"), the error's filename the file."""
    where = f" {err.filename}" if err.filename else ""
    thing = f"{what}{where}".strip() or "a file"
    if err.errno in DISK_FULL:
        return (f"no space left on the device to write {thing}; free some space (or choose another output "
                "directory with --out), then run the same command again: finished work is kept")
    if err.errno == errno.EROFS:
        return (f"cannot write {thing}: the file system is read-only; choose a writable output directory "
                "(--out), then run again")
    if err.errno in NOT_WRITABLE:
        return (f"permission denied on {thing}; make it and its directory writable (chmod u+w) or choose another "
                "output directory (--out), then run again")
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{thing}: a file stands where a directory should be; move it, or choose another --out"
    reason = err.strerror or str(err)
    return f"{reason}: {thing}; check the path, the disk and its permissions, then run again (finished work is kept)"
