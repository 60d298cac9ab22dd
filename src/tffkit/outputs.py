"""A run owns its output folder: checked before any work, filled in a staging sibling, swapped in at the end.

:class:`RunFolder` (``with run_folder(out, ctx) as folder:``) first makes sure ``out`` can be created and
written (a probe file), so a wrong ``--out`` fails in a second, not after hours. Results are written into
a hidden sibling ``.NAME.tff-XXXXXX``; when the run finishes that folder replaces ``out`` in one rename
(``renameat2(RENAME_EXCHANGE)`` on Linux, else two renames), so the folder always holds exactly one run's
files. An interrupted or failed run removes its staging folder and leaves an earlier ``out`` untouched.
A non-empty ``out`` that is not a tffkit result (no ``run.json``) is never replaced.

A run holds its output folder: :class:`OutputLock` takes an exclusive ``flock`` on ``.NAME.tff-lock`` beside it
(the kernel releases it when the process dies, even by SIGKILL), so a second run into the same folder is refused
at once in one line naming the folder and the holder (pid, host, start time) instead of silently replacing the
first run's results. Every staging folder holds ``.tff-owner`` (pid and host of its run) until it is swapped in;
a run that holds the lock removes the staging folders of earlier runs whose owner is dead (killed by SIGKILL or a
power cut). Staging folders without an owner file (older tffkit) or with a live owner are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .results import file_mode

STAGING = ".tff-"  # infix of staging folders: .NAME.tff-XXXXXX
LOCK = ".tff-lock"  # suffix of the lock file beside the output folder: .NAME.tff-lock
OWNER = ".tff-owner"  # inside a staging folder: its run's pid and host


class OutputFolderError(ValueError):
    """The output folder cannot be used (it is a file, lies under a file, is not writable, or is not ours)."""


def _describe(path: Path, exc: OSError) -> str:
    if isinstance(exc, (NotADirectoryError, FileExistsError)) or exc.errno in (errno.ENOTDIR, errno.EEXIST):
        for parent in [path, *path.parents]:
            if parent.is_file() or (parent.exists() and not parent.is_dir()):
                return f"{parent} is a file, not a folder"
    return f"{exc.strerror or exc} ({type(exc).__name__})"


def _write_probe(folder: Path) -> None:
    """Create and remove an empty file in ``folder`` (raises OSError when it cannot be written)."""
    fd, probe = tempfile.mkstemp(prefix=".tff-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_writable(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and write (then remove) a probe file in it; :class:`OutputFolderError` says why
    it cannot be used. Returns the resolved folder."""
    path = Path(out).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"output folder {out} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _write_probe(path)
    except OSError as exc:
        raise OutputFolderError(f"output folder {out} cannot be written: {_describe(path, exc)}") from None
    return path


def _is_ours(folder: Path) -> bool:
    """An existing folder a run may replace: empty, or a tffkit result (it has a run.json)."""
    return not any(folder.iterdir()) or (folder / "run.json").is_file()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


class OutputLock:
    """An exclusive lock on the output folder ``out`` (see the module docstring); :meth:`acquire` raises
    :class:`OutputFolderError` naming the folder and the holder when another run holds it. No-op without
    ``fcntl`` (Windows)."""

    def __init__(self, out: str | os.PathLike):
        self.folder = Path(out).expanduser().resolve()
        self.path = self.folder.parent / f".{self.folder.name}{LOCK}"
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode("utf-8", "replace")
                os.close(fd)
                raise OutputFolderError(f"output folder {self.folder} is in use by another tffkit run "
                                        f"({_describe_holder(holder)}); wait for it to finish or choose another "
                                        "output folder") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino  # not unlinked by a run that just ended
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']}, since {h['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def _owner_dead(folder: Path) -> bool:
    """True when ``folder``'s owner file names a process of this host that no longer runs."""
    try:
        owner = json.loads((folder / OWNER).read_text())
        pid, host = int(owner["pid"]), owner["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no owner file (an older tffkit, or not ours): left alone
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return pid == os.getpid()  # our own pid: an earlier run of this process that was cut off


def remove_stale_staging(out: str | os.PathLike) -> list[Path]:
    """Remove the staging folders of ``out`` left by runs that died (call it while holding :class:`OutputLock`);
    returns the folders removed."""
    final = Path(out).expanduser().resolve()
    prefix = f".{final.name}{STAGING}"
    removed = []
    if not final.parent.is_dir():
        return removed
    for entry in sorted(final.parent.iterdir()):
        if entry.name.startswith(prefix) and entry.is_dir() and not entry.is_symlink() and _owner_dead(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


class RunFolder:
    """The output folder of one run, staged (see the module docstring); ``path`` is where results go."""

    def __init__(self, out: str | os.PathLike, ctx: Any = None):
        from . import distributed as tdist

        self.ctx = ctx
        self.main = ctx is None or ctx.is_main
        self.final = Path(out).expanduser().resolve()
        staged, error = None, None
        self.lock = OutputLock(self.final) if self.main else None
        if self.main:
            try:
                check_writable(self.final.parent)
                self.lock.acquire()
                staged = str(self._stage())
            except OutputFolderError as exc:
                self.lock.release()
                error = str(exc)
        shared = tdist.gather_objects((staged, error))[0]  # every rank writes into rank 0's staging folder
        if shared[1]:
            raise OutputFolderError(shared[1])
        self.path = Path(shared[0])

    def _stage(self) -> Path:
        if self.final.exists() and not self.final.is_dir():
            raise OutputFolderError(f"output folder {self.final} is a file, not a folder")
        if self.final.is_dir() and not _is_ours(self.final):
            raise OutputFolderError(f"output folder {self.final} holds files that are not a tffkit result (no "
                                    "run.json); a run replaces its whole folder, so choose a new or empty one")
        parent = check_writable(self.final.parent)
        for old in remove_stale_staging(self.final):
            print(f"note: removed {old}, the unfinished results of a run that was killed", flush=True)
        try:
            path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}{STAGING}", dir=parent))
            (path / OWNER).write_text(json.dumps(_holder()))
            os.chmod(path, file_mode(directory=True))
            _write_probe(path)
        except OSError as exc:
            raise OutputFolderError(f"output folder {self.final} cannot be written: {_describe(parent, exc)}") from None
        return path

    def commit(self) -> Path:
        """Every rank has finished writing: the staged folder replaces ``out`` (rank 0), then all ranks go on."""
        from . import distributed as tdist

        tdist.barrier()
        if self.main:
            try:
                self._swap()
            finally:
                self.lock.release()
        tdist.barrier()
        return self.final

    def _swap(self) -> None:
        (self.path / OWNER).unlink(missing_ok=True)
        if self.final.is_dir() and _exchange(self.path, self.final):
            shutil.rmtree(self.path)  # the earlier run's files, now at the staging name
            return
        old = None
        if self.final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.final.parent))
            os.replace(self.final, old / "x")
        os.replace(self.path, self.final)
        if old is not None:
            shutil.rmtree(old)

    def discard(self) -> None:
        """Remove the staging folder (the run failed or was interrupted); ``out`` keeps its earlier files."""
        if self.main:
            shutil.rmtree(self.path, ignore_errors=True)
            self.lock.release()


@contextlib.contextmanager
def run_folder(out: str | os.PathLike | None, ctx: Any = None) -> Iterator[Path | None]:
    """``with run_folder(out, ctx) as folder:`` — write results under ``folder``; on success it becomes ``out``.

    ``out`` None yields None (nothing is written). Problems with ``out`` raise before the block runs."""
    if out is None:
        yield None
        return
    run = RunFolder(out, ctx)
    try:
        yield run.path
    except BaseException:
        run.discard()
        raise
    run.commit()
