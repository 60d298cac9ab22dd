"""Folder layouts with one folder per generator beside (or below) the label folders.

- ``label-first``: ``ROOT/{real,fake}/<generator>/`` (DEAR, LDMFakeDetect); set = ``<generator>``. Its reals are
  ``real/<generator>/``; images directly in ``real/`` (or real folders named after no generator) are shared by the
  sets that have no reals of their own.
- ``generator-first``: ``ROOT/<generator>/{real,fake}/`` (local copies of Community Forensics); set =
  ``<generator>``.

Label folder names match case-insensitively (``Real``/``FAKE`` too); ``--real-dirs``/``--fake-dirs`` rename them.
Images are read at any depth under a generator's label folder. :func:`pair_reals` is the rule both these and the
Hugging Face tables (:mod:`tffkit.tables`) use to give each generator its reals.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .dataspec import DatasetLayoutError, Groups
from .walk import WalkLog, image_files, walk

LABEL_FIRST, GENERATOR_FIRST = "label-first", "generator-first"


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
    except OSError:
        return []


def _named(folders: Iterable[Path], names: tuple[str, ...]) -> list[Path]:
    lower = {n.lower() for n in names}
    return [p for p in folders if p.name.lower() in lower]


def looks_label_first(root: Path, real: tuple[str, ...], fake: tuple[str, ...]) -> bool:
    """``ROOT`` holds a real and a fake folder and the fake folder holds generator folders."""
    top = _subdirs(root)
    fakes = _named(top, fake)
    return bool(_named(top, real)) and bool(fakes) and any(_subdirs(f) for f in fakes)


def looks_generator_first(root: Path, tree: list[tuple[str, list[str], list[str]]], real: tuple[str, ...],
                          fake: tuple[str, ...]) -> bool:
    """Some folder directly below ``ROOT`` holds a real and a fake folder, and no real/fake pair lies deeper (a
    deeper one is ForenSynths' ``ROOT/<set>/<class>/{real,fake}``)."""
    lower_real, lower_fake = {n.lower() for n in real}, {n.lower() for n in fake}
    pairs = [folder for folder, dirs, _ in tree
             if {d.lower() for d in dirs} & lower_real and {d.lower() for d in dirs} & lower_fake]
    parent = os.path.abspath(root)
    return bool(pairs) and all(os.path.dirname(os.path.abspath(p)) == parent for p in pairs)


def pair_reals(fakes: dict[tuple[str, str], list[str]], reals: dict[tuple[str, str], list[str]],
               loose: dict[str, list[str]], where: str) -> tuple[Groups, list[str]]:
    """Each generator's reals: ``fakes``/``reals`` map (generator, split) → paths, ``loose`` split → reals that name
    no generator. A generator with reals of its own keeps them; the others share the loose reals and the reals
    of generators without fakes. Returns the groups and what was shared or left out (sentences)."""
    groups: Groups = {}
    for (gen, split), paths in fakes.items():
        groups[(gen, "", split, 1)] = paths
    shared: dict[str, list[str]] = {s: list(v) for s, v in loose.items()}
    orphans: dict[str, list[str]] = {}
    for (gen, split), paths in reals.items():
        if (gen, split) in fakes:
            groups[(gen, "", split, 0)] = paths
        else:
            shared.setdefault(split, []).extend(paths)
            orphans.setdefault(split, []).append(gen)
    notes = []
    for split in sorted(set(shared) | {s for _, s in fakes}):
        pool = sorted(shared.get(split, []))
        takers = sorted(g for g, s in fakes if s == split and (g, "", s, 0) not in groups)
        names = orphans.get(split, [])
        origin = (f"{', '.join(names[:5])}{' …' if len(names) > 5 else ''} (reals without fakes)" if names else "") + \
                 (" and " if names and loose.get(split) else "") + \
                 (f"{len(loose[split])} real image(s) of no generator" if loose.get(split) else "")
        at = f" (split {split})" if split else ""
        if pool and takers:
            for gen in takers:
                groups[(gen, "", split, 0)] = pool
            notes.append(f"{where}{at}: {len(pool)} real image(s) from {origin} are shared by the generator(s) "
                         f"without reals of their own: {', '.join(takers[:8])}" + (" …" if len(takers) > 8 else ""))
        elif pool:
            notes.append(f"{where}{at}: {len(pool)} real image(s) from {origin} belong to no generator with fakes "
                         "and are left out")
    return groups, notes


def _by_position(root: Path, log: WalkLog) -> dict[tuple[str, ...], list[str]]:
    """Images by their first two folders below ``root`` (one walk from the root, so a link back up is a loop)."""
    out: dict[tuple[str, ...], list[str]] = {}
    for folder, dirs, files in walk(root, log):
        rel = os.path.relpath(folder, root)
        parts = tuple(Path(rel).parts[:2]) if rel != "." else ()
        out.setdefault(parts, []).extend(image_files(folder, files))
        if len(parts) == 1:  # generator (or label) folders, listed even when empty
            for d in dirs:
                out.setdefault(parts + (d,), [])
    return out


def read_label_first(root: Path, real: tuple[str, ...], fake: tuple[str, ...], log: WalkLog
                     ) -> tuple[Groups, list[str]]:
    """``ROOT/{real,fake}/<generator>/``: one set per generator folder under the fake folder(s)."""
    lower_real, lower_fake = {n.lower() for n in real}, {n.lower() for n in fake}
    found = _by_position(root, log)
    top = sorted({k[0] for k in found if k})
    fakes: dict[tuple[str, str], list[str]] = {}
    reals: dict[tuple[str, str], list[str]] = {}
    loose: dict[str, list[str]] = {}
    warnings = []
    for key, paths in sorted(found.items()):
        if not key or key[0].lower() not in lower_real | lower_fake:
            continue
        is_real = key[0].lower() in lower_real
        if len(key) == 2:
            (reals if is_real else fakes).setdefault((key[1], ""), []).extend(paths)
        elif is_real and paths:
            loose.setdefault("", []).extend(paths)
        elif paths:
            warnings.append(f"{len(paths)} image(s) directly in {os.path.join(root, key[0])} belong to no generator "
                            "folder and are left out")
    if not fakes:
        raise DatasetLayoutError(f"no generator folders in a {'/'.join(fake)} folder at the top of {root}. Expected "
                                 f"ROOT/{{real,fake}}/<generator>/ (found {top[:12]})")
    others = [name for name in top if name.lower() not in lower_real | lower_fake]
    warnings += [f"folder {name!r} is neither {'/'.join(real)} nor {'/'.join(fake)}: it is left out" for name in others]
    groups, notes = pair_reals(fakes, reals, loose, f"layout {LABEL_FIRST}")
    return groups, notes + warnings


def read_generator_first(root: Path, real: tuple[str, ...], fake: tuple[str, ...], log: WalkLog
                         ) -> tuple[Groups, list[str]]:
    """``ROOT/<generator>/{real,fake}/``: one set per generator folder."""
    lower_real, lower_fake = {n.lower() for n in real}, {n.lower() for n in fake}
    found = _by_position(root, log)
    groups: Groups = {}
    warnings = []
    for gen in sorted({k[0] for k in found if k}):
        subs = [k[1] for k in found if len(k) == 2 and k[0] == gen]
        labelled = [s for s in subs if s.lower() in lower_real | lower_fake]
        if not labelled:
            warnings.append(f"folder {gen!r} holds no {'/'.join(real + fake)} folder: it is not a set and is "
                            "left out")
            continue
        for label, names in ((0, lower_real), (1, lower_fake)):
            groups[(gen, "", "", label)] = sorted(p for s in subs if s.lower() in names for p in found[(gen, s)])
        extra = [s for s in subs if s not in labelled]
        if extra:
            warnings.append(f"set {gen!r}: folder(s) {extra[:5]} are neither {'/'.join(real)} nor "
                            f"{'/'.join(fake)} and are left out")
    if not groups:
        raise DatasetLayoutError(f"no folder under {root} holds {'/'.join(real)} and {'/'.join(fake)} folders. "
                                 "Expected ROOT/<generator>/{real,fake}/")
    return groups, warnings
