"""A run owns its output folder: checked before any work, filled in a staging sibling, swapped in at the end.

:class:`RunFolder` (``with run_folder(out, ctx) as folder:``) first makes sure ``out`` can be created and
written (a probe file), so a wrong ``--out`` fails in a second, not after hours. Results are written into
a hidden sibling ``.NAME.tff-XXXXXX``; when the run finishes that folder replaces ``out`` in one rename
(``renameat2(RENAME_EXCHANGE)`` on Linux, else two renames), so the folder always holds exactly one run's
files. An interrupted or failed run removes its staging folder and leaves an earlier ``out`` untouched.
A non-empty ``out`` that is not a tffkit result (no ``run.json``) is never replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .results import file_mode

STAGING = ".tff-"  # infix of staging folders: .NAME.tff-XXXXXX


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


class RunFolder:
    """The output folder of one run, staged (see the module docstring); ``path`` is where results go."""

    def __init__(self, out: str | os.PathLike, ctx: Any = None):
        from . import distributed as tdist

        self.ctx = ctx
        self.main = ctx is None or ctx.is_main
        self.final = Path(out).expanduser().resolve()
        staged, error = None, None
        if self.main:
            try:
                staged = str(self._stage())
            except OutputFolderError as exc:
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
        try:
            path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}{STAGING}", dir=parent))
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
            if self.final.is_dir() and _exchange(self.path, self.final):
                shutil.rmtree(self.path)  # the earlier run's files, now at the staging name
            else:
                old = None
                if self.final.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.final.parent))
                    os.replace(self.final, old / "x")
                os.replace(self.path, self.final)
                if old is not None:
                    shutil.rmtree(old)
        tdist.barrier()
        return self.final

    def discard(self) -> None:
        """Remove the staging folder (the run failed or was interrupted); ``out`` keeps its earlier files."""
        if self.main:
            shutil.rmtree(self.path, ignore_errors=True)


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
