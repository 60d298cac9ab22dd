"""Walking image folders robustly: symbolic-link loops are followed once, unreadable entries are kept.

``os.walk(followlinks=True)`` follows a link back to an ancestor until the path length limit (one loop made
ten images count as 410; two made a walk take minutes). :func:`walk` remembers the (device, inode) of every
folder on the current branch and skips a folder that is its own ancestor, recording it. The same folder reached
by two different branches (a shared real folder linked into every set) is still walked in each. Files are every
non-folder entry, so a dangling link or a file-link loop reaches the decoder and is listed as unreadable
instead of vanishing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Files with these extensions are images: decoded, or listed as unreadable (with why) when they cannot be — never
# skipped in silence. AVIF is read by Pillow ≥ 11.3 builds with libavif; HEIC/HEIF needs the pillow-heif plugin.
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".avif", ".heic", ".heif"}


@dataclass
class WalkLog:
    """What a walk skipped: folders that are their own ancestor (link loops) and folders it could not list."""

    loops: list[str] = field(default_factory=list)
    unlistable: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One sentence per skipped folder."""
        out = [f"symbolic-link loop {p} → {os.path.realpath(p)} (an ancestor) was followed once and not again"
               for p in self.loops]
        return out + [f"folder {p} could not be listed and was skipped" for p in self.unlistable]


def _key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def walk(root: str | os.PathLike, log: WalkLog | None = None) -> Iterator[tuple[str, list[str], list[str]]]:
    """Top-down ``(folder, subfolder names, file names)``, sorted, following links but never into an ancestor.

    ``file names`` are all entries that are not folders (including broken links and link loops)."""
    log = log if log is not None else WalkLog()
    root = os.fspath(root)
    start = _key(root)
    stack: list[tuple[str, frozenset]] = [(root, frozenset([start]) if start else frozenset())]
    while stack:
        folder, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            log.unlistable.append(folder)
            continue
        dirs, files = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
        yield folder, dirs, files
        children = []
        for name in dirs:
            path = os.path.join(folder, name)
            key = _key(path)
            if key is None:
                log.unlistable.append(path)
            elif key in ancestors:
                log.loops.append(path)
            else:
                children.append((path, ancestors | {key}))
        stack.extend(reversed(children))


def image_files(folder: str, names: list[str]) -> list[str]:
    """The entries of ``folder`` whose names have an image extension (links included, even broken ones)."""
    return [os.path.join(folder, n) for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]


def images_under(root: str | os.PathLike, log: WalkLog | None = None) -> list[str]:
    """Every image file at any depth under ``root`` (sorted by path), loops followed once."""
    out = []
    for folder, _, files in walk(root, log):
        out.extend(image_files(folder, files))
    return sorted(out)
