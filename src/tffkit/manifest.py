"""CSV manifests: ``path,label[,set,class]`` for any benchmark a folder layout does not describe.

Columns are matched case-insensitively: the path in ``path`` / ``image_path`` / ``filepath`` / ``file`` /
``filename`` (relative paths are taken from the manifest's folder), the label in ``label`` or ``target``
(ArtiFact's ``metadata.csv``: 0 = real, any other integer = a fake's generator class), the set in ``set`` (else the
manifest's folder name), the class in ``class`` or ``category`` and the group (the source photograph, scene or
prompt that several images share: the unit of replication of intervals) in ``group``, ``source`` or ``prompt_id``.
A label is 0/1 (or another integer, fake), a real/fake word, or one of the real/fake folder names.
Every bad row is reported at once with its line number.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .layouts import DatasetLayoutError, DataSpec

PATH_COLUMNS = ("path", "image_path", "filepath", "file", "filename")
LABEL_COLUMNS = ("label", "target")
SET_COLUMNS = ("set",)
CLASS_COLUMNS = ("class", "category")
GROUP_COLUMNS = ("group", "source", "prompt_id")
REAL_WORDS = {"0", "real", "0_real", "nature", "false"}
FAKE_WORDS = {"1", "fake", "1_fake", "ai", "true", "synthetic", "generated"}


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lower = [h.strip().lower() for h in header]
    return next((lower.index(n) for n in names if n in lower), None)


def parse_label(value: str, real_names: tuple[str, ...] = (), fake_names: tuple[str, ...] = ()) -> int | None:
    """0 (real), 1 (fake) or None when ``value`` names neither."""
    v = value.strip()
    if v in real_names or v.lower() in REAL_WORDS:
        return 0
    if v in fake_names or v.lower() in FAKE_WORDS:
        return 1
    try:
        number = float(v)
    except ValueError:
        return None
    return None if number != int(number) or number < 0 else int(number > 0)


def read_manifest(spec: DataSpec) -> tuple[dict[tuple[str, str, str, int], list[str]], dict[str, str]]:
    """Folders ``(set, class, '', label) → paths`` of the manifest ``spec.root``, and each path's group (its
    ``group`` / ``source`` / ``prompt_id`` column: the unit of replication, docs/algorithms.md §10; empty without
    that column)."""
    path = Path(spec.root)
    base = path.resolve().parent
    real_names, fake_names = spec.dirs("manifest")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DatasetLayoutError(f"manifest {path} is empty; expected a header path,label[,set,class]")
    header = rows[0]
    cols = {name: _column(header, names) for name, names in
            (("path", PATH_COLUMNS), ("label", LABEL_COLUMNS), ("set", SET_COLUMNS), ("class", CLASS_COLUMNS),
             ("group", GROUP_COLUMNS))}
    if cols["path"] is None or cols["label"] is None:
        raise DatasetLayoutError(f"manifest {path} has columns {header}; expected a path column "
                                 f"({'/'.join(PATH_COLUMNS)}) and a label column ({'/'.join(LABEL_COLUMNS)}), "
                                 "optionally set and class (or category)")
    groups: dict[tuple[str, str, str, int], list[str]] = {}
    file_groups: dict[str, str] = {}
    errors = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(c for c in cols.values() if c is not None):
            errors.append(f"line {line}: {len(row)} field(s), expected {len(header)}")
            continue
        label = parse_label(row[cols["label"]], real_names, fake_names)
        if label is None:
            errors.append(f"line {line}: label {row[cols['label']]!r} is neither real (0, real, "
                          f"{', '.join(real_names)}) nor fake (1 or another integer, fake, {', '.join(fake_names)})")
            continue
        file = row[cols["path"]].strip()
        full = file if os.path.isabs(file) else os.path.join(base, file)
        set_name = row[cols["set"]].strip() if cols["set"] is not None else base.name
        cls = row[cols["class"]].strip() if cols["class"] is not None else ""
        groups.setdefault((set_name, cls, "", label), []).append(os.path.normpath(full))
        if cols["group"] is not None:
            file_groups[os.path.normpath(full)] = row[cols["group"]].strip()
    if errors:
        shown = "\n  ".join(errors[:10]) + (f"\n  … and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise DatasetLayoutError(f"manifest {path} has {len(errors)} bad row(s):\n  {shown}")
    if not groups:
        raise DatasetLayoutError(f"manifest {path} lists no images")
    return groups, file_groups
