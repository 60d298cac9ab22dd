"""CSV manifests: ``path,label[,set,class,group,mask]`` for any benchmark a folder layout does not describe.

Columns are matched case-insensitively: the path in ``path`` / ``image_path`` / ``filepath`` / ``file`` /
``filename`` (relative paths are taken from the manifest's folder), the label in ``label`` or ``target``
(ArtiFact's ``metadata.csv``: 0 = real, any other integer = a fake's generator class), the set in ``set`` (else the
manifest's folder name), the class in ``class`` or ``category`` and the group (the source photograph, scene or
prompt that several images share: the unit of replication of intervals) in ``group``, ``source``, ``source_id``
(B-Free's viral images) or ``prompt_id``, and a mask image's path in ``mask`` (kept on the sample for later
analyses; relative paths from the manifest's folder, as for images). A label is 0/1 (or another integer, fake), a
real/fake word in any case (``REAL``/``FAKE``), or one of the real/fake folder names.
Every bad row is reported at once with its line number.

A file listed with both labels (anywhere in the manifest) is refused: it would be scored as real and as fake. A row
repeated with the same set, class and label is used once and reported (how many, which lines). Rows whose file lies
outside the manifest's folder (``../``, absolute paths) are read as listed and reported (how many, which files),
since generated manifests often hold absolute paths.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .dataspec import DatasetLayoutError, DataSpec

PATH_COLUMNS = ("path", "image_path", "filepath", "file", "filename")
LABEL_COLUMNS = ("label", "target")
SET_COLUMNS = ("set",)
CLASS_COLUMNS = ("class", "category")
GROUP_COLUMNS = ("group", "source", "source_id", "prompt_id")
MASK_COLUMNS = ("mask", "mask_path")
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


def read_manifest(spec: DataSpec, warnings: list[str] | None = None
                  ) -> tuple[dict[tuple[str, str, str, int], list[str]], dict[str, str], dict[str, str]]:
    """Folders ``(set, class, '', label) → paths`` of the manifest ``spec.root``, each path's group (its ``group``
    / ``source`` / ``source_id`` / ``prompt_id`` column: the unit of replication, docs/algorithms.md §10; none
    without that column) and each path's mask (``mask`` column; none without); what looked odd (repeated rows,
    files outside its folder) is appended to ``warnings``."""
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
             ("group", GROUP_COLUMNS), ("mask", MASK_COLUMNS))}
    if cols["path"] is None or cols["label"] is None:
        raise DatasetLayoutError(f"manifest {path} has columns {header}; expected a path column "
                                 f"({'/'.join(PATH_COLUMNS)}) and a label column ({'/'.join(LABEL_COLUMNS)}), "
                                 "optionally set and class (or category)")
    groups: dict[tuple[str, str, str, int], list[str]] = {}
    file_groups: dict[str, str] = {}
    masks: dict[str, str] = {}
    errors = []
    seen: dict[tuple[str, str, str, int], int] = {}  # (path, set, class, label) → first line
    labels: dict[str, dict[int, int]] = {}  # path → label → first line
    repeated: list[str] = []
    outside: list[str] = []
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
        full = os.path.normpath(full)
        labels.setdefault(full, {}).setdefault(label, line)
        if (full, set_name, cls, label) in seen:
            repeated.append(f"line {line} (= line {seen[(full, set_name, cls, label)]})")
            continue
        seen[(full, set_name, cls, label)] = line
        if os.path.isabs(file) or not full.startswith(str(base) + os.sep):
            outside.append(file)
        groups.setdefault((set_name, cls, "", label), []).append(full)
        if cols["group"] is not None:
            file_groups[full] = row[cols["group"]].strip()
        mask = row[cols["mask"]].strip() if cols["mask"] is not None else ""
        if mask:
            masks[full] = os.path.normpath(mask if os.path.isabs(mask) else os.path.join(base, mask))
    both = [f"{p} (real on line {ls[0]}, fake on line {ls[1]})" for p, ls in labels.items() if len(ls) == 2]
    if both:
        errors.append(f"{len(both)} file(s) listed as both real and fake: " + "; ".join(both[:5])
                      + (f" … and {len(both) - 5} more" if len(both) > 5 else ""))
    if warnings is not None and repeated:
        warnings.append(f"manifest {path} repeats {len(repeated)} row(s), each used once: {', '.join(repeated[:5])}"
                        + (f" … and {len(repeated) - 5} more" if len(repeated) > 5 else ""))
    if warnings is not None and outside:
        warnings.append(f"{len(outside)} row(s) of manifest {path} point outside its folder {base} and are read as "
                        f"listed: {', '.join(outside[:5])}" + (f" … and {len(outside) - 5} more" if len(outside) > 5
                                                                 else ""))
    if len(errors) == 1:
        raise DatasetLayoutError(f"manifest {path}: {errors[0]}")
    if errors:
        shown = "\n  ".join(errors[:10]) + (f"\n  … and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise DatasetLayoutError(f"manifest {path} has {len(errors)} bad row(s):\n  {shown}")
    if not groups:
        raise DatasetLayoutError(f"manifest {path} lists no images")
    return groups, file_groups, masks
