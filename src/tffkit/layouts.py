"""Benchmark layouts → labelled samples: ForenSynths, GenImage, DiffusionForensics, fake-only sets paired with a
shared real folder, and CSV manifests.

- ``forensynths``: ``ROOT/<set>/[<class>/]{0_real,1_fake}`` (label folders at any depth); set = the first folder,
  class = the folders between.
- ``genimage``: ``ROOT/<gen>/<subset>/{train,val}/{ai,nature}``; set = ``<gen>``, class = ``<subset>``, split
  ``val`` unless chosen.
- ``diffusionforensics``: ``ROOT/…/{real,<gen>…}``; set = the path of ``<gen>``, every ``<gen>`` shares ``real``.
- ``paired``: ``ROOT/<set>/…`` holds fakes only, ``real`` (``--real FOLDER``) the shared reals; set = first folder.
- ``manifest``: a CSV ``path,label[,set,class,group,mask]`` (ArtiFact's ``image_path,target,category``, B-Free's
  ``filename,label,source_id`` too).
- ``label-first`` ``ROOT/{real,fake}/<gen>/`` and ``generator-first`` ``ROOT/<gen>/{real,fake}/``
  (:mod:`tffkit.genlayouts`); ``table``: Hugging Face parquet/Arrow shards (:mod:`tffkit.tables`).

Real/fake folder names are configurable (``real_dirs``/``fake_dirs``); a ``train``/``val``/``test`` folder just
above a label folder is a split (``split`` picks one; ``val`` when a set has several). Labels come from names
only, never from ``ImageFolder`` ordering. :func:`discover` also returns what it found (sets, classes, counts per
label) and warnings (empty sets, sets with one label, link loops); an ambiguous or empty layout is an error that
says what was expected and what was found.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .dataspec import DEFAULT_DIRS, LAYOUTS, DatasetLayoutError, DataSpec, Groups, as_spec
from .genlayouts import looks_generator_first, looks_label_first, read_generator_first, read_label_first
from .manifest import read_manifest
from .tables import is_table, read_tables
from .walk import IMAGE_EXTENSIONS, WalkLog, image_files, images_under, walk

__all__ = ["DEFAULT_DIRS", "LAYOUTS", "REAL_FAKE", "SPLITS", "DataSpec", "DatasetLayoutError", "Discovery", "Groups",
           "Sample", "as_spec", "discover", "find_samples", "format_summary"]

SPLITS = ("train", "val", "test")
REAL_FAKE = "real/fake"  # what auto-detection calls sibling folders named real and fake (read as ForenSynths)


@dataclass(frozen=True)
class Sample:
    """One image on disk with its label (0 real, 1 fake), set, class and group: the source (photograph, scene,
    prompt, object class) it shares with other images — the unit of replication of intervals (docs/algorithms.md
    §10); empty when unknown, and then the image is its own unit (:attr:`unit`). ``mask``: a mask image's path
    (a manifest's ``mask`` column), kept for analyses of the manipulated region. A row of a table has the path
    ``<shard>#<row>`` (:mod:`tffkit.tables`)."""

    path: str
    label: int
    set: str
    cls: str
    group: str = ""
    mask: str = ""

    @property
    def unit(self) -> str:
        """The group, or the image itself where no group is known."""
        return self.group or self.path


@dataclass
class Discovery:
    """The samples of a data spec, the layout used, and warnings about what looked wrong."""

    samples: list[Sample]
    layout: str
    spec: DataSpec
    warnings: list[str] = field(default_factory=list)
    split: dict[str, str] = field(default_factory=dict)
    group_source: str = "image"

    def summary(self) -> dict:
        """Sets, classes and counts per label (for run.json and the printed note)."""
        sets: dict[str, dict] = {}
        for s in self.samples:
            entry = sets.setdefault(s.set, {"set": s.set, "n_real": 0, "n_fake": 0, "classes": {}})
            key = "n_fake" if s.label else "n_real"
            entry[key] += 1
            cls = entry["classes"].setdefault(s.cls or "", {"n_real": 0, "n_fake": 0})
            cls[key] += 1
        real, fake = self.spec.dirs(self.layout)
        for entry in sets.values():
            entry["n_groups"] = len({s.unit for s in self.samples if s.set == entry["set"]})
        return {"root": self.spec.root, "layout": self.layout, "real_dirs": list(real), "fake_dirs": list(fake),
                "shared_real": self.spec.real, "splits": self.split, "n_images": len(self.samples),
                "group_source": self.group_source,
                "n_real": sum(1 for s in self.samples if s.label == 0),
                "n_fake": sum(1 for s in self.samples if s.label == 1),
                "sets": list(sets.values()), "warnings": list(self.warnings)}


def format_summary(summary: dict) -> str:
    """The discovery summary as a few lines for the terminal."""
    from .results import display_path

    head = f"data {display_path(summary['root'])}: layout {summary['layout']}"
    if summary["layout"] == "diffusionforensics":
        head += f" (real: {', '.join(summary['real_dirs'])}; fake: every other folder beside it, one set each)"
    elif summary["layout"] == "table":
        head += " (parquet/Arrow rows; sets from the generator column)"
    elif summary["layout"] != "manifest":
        head += f" (real: {', '.join(summary['real_dirs']) or '—'}; fake: {', '.join(summary['fake_dirs']) or '—'})"
    if summary.get("shared_real"):
        head += f", shared reals from {display_path(summary['shared_real'])}"
    lines = [head + f" — {len(summary['sets'])} set(s), {summary['n_real']} real and {summary['n_fake']} fake images"]
    for entry in summary["sets"]:
        classes = [c for c in entry["classes"] if c]
        split = summary.get("splits", {}).get(entry["set"])
        extra = (f", split {split}" if split else "") + (f", {len(classes)} classes" if classes else "")
        if summary.get("group_source", "image") != "image":
            extra += f", {entry['n_groups']} groups ({summary['group_source']})"
        lines.append(f"  {entry['set']}: {entry['n_real']} real, {entry['n_fake']} fake{extra}")
    lines += [f"warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


def find_samples(data: str | os.PathLike | DataSpec, sets: Sequence[str] | None = None,
                 max_per_class: int | None = None, max_per_label: int | None = None) -> list[Sample]:
    """The samples of ``data`` in a deterministic order (set, class, label, path); see :func:`discover`."""
    return discover(data, sets, max_per_class, max_per_label).samples


def discover(data: str | os.PathLike | DataSpec, sets: Sequence[str] | None = None,
             max_per_class: int | None = None, max_per_label: int | None = None) -> Discovery:
    """Read ``data``'s layout; ``max_per_class`` keeps the first N images of each (set, class, label),
    ``max_per_label`` the first N of each (set, label). Raises :class:`DatasetLayoutError` saying what was expected
    and what was found."""
    from .options import problem

    why = problem("max_per_class", max_per_class)
    if why:
        raise ValueError(f"max_per_class: {why}")
    spec = as_spec(data)
    root = Path(spec.root)
    if not root.exists():
        raise DatasetLayoutError(f"data root {root} does not exist")
    log = WalkLog()
    layout = spec.layout if spec.layout != "auto" else _detect(spec, log)
    notes = []
    if layout == REAL_FAKE:  # real/ beside fake/: the labels, not DiffusionForensics with a generator named fake
        spec, layout = replace(spec, real_dirs=("real",), fake_dirs=("fake",)), "forensynths"
        notes.append("folders named 'real' and 'fake' are read as the labels (ForenSynths layout with --real-dirs "
                     "real --fake-dirs fake); if 'fake' is one generator of a DiffusionForensics tree, pass --layout "
                     "diffusionforensics")
    elif layout == "generator-first" and spec.layout == "auto":
        notes.append("folders named 'real' and 'fake' are read as the labels (layout generator-first: "
                     "ROOT/<generator>/{real,fake}/); if 'fake' is one generator of a DiffusionForensics tree, pass "
                     "--layout diffusionforensics")
    masks: dict[str, str] = {}
    file_groups: dict[str, str] = {}
    source = "manifest column"
    if layout == "manifest":
        warnings, split = [], {}
        groups, file_groups, masks = read_manifest(spec, warnings)
    else:
        if layout == "table":
            groups, file_groups, warnings = read_tables(root, log)
            source = "table column"
        elif not root.is_dir():
            raise DatasetLayoutError(f"data root {root} is not a folder (a .csv file is read as a manifest, a "
                                     ".parquet/.arrow file as a table)")
        else:
            reader = {"forensynths": _label_folders, "genimage": _label_folders, "diffusionforensics": _diffusion,
                      "paired": _paired, "label-first": _generator_folders,
                      "generator-first": _generator_folders}[layout]
            groups, warnings = reader(spec, layout, log)
        groups, split, split_warnings = _choose_split(groups, spec.split)
        warnings += split_warnings
    warnings = notes + warnings + log.warnings()
    found = _select(groups, spec, layout, sets, max_per_class, max_per_label, warnings, split)
    if masks:
        found.samples = [replace(s, mask=masks.get(s.path, "")) for s in found.samples]
    return _with_groups(found, file_groups, source)


def _with_groups(found: Discovery, file_groups: dict[str, str], source: str = "manifest column") -> Discovery:
    """Each sample's group (docs/algorithms.md §10): from ``--group-pattern`` on its file name, else a manifest's
    or table's group column, else its class folder (ForenSynths' object classes), else none (the image is the
    unit)."""
    samples, spec = found.samples, found.spec
    if spec.group_pattern is not None:
        pattern = re.compile(spec.group_pattern)
        matches = [pattern.search(os.path.basename(s.path)) for s in samples]
        unmatched = sum(m is None for m in matches)
        if unmatched:
            found.warnings.append(f"--group-pattern {spec.group_pattern!r} matches no group in {unmatched} of "
                                  f"{len(samples)} file names; each of those images is its own group")
        names = [(m.group("group") if "group" in m.re.groupindex else m.group(1)) if m else "" for m in matches]
        source = "file-name pattern"
    elif file_groups:
        names = [file_groups.get(s.path, "") for s in samples]
    elif any(s.cls for s in samples):
        names = [s.cls for s in samples]
        source = "class folder"
    else:
        return found
    found.samples = [replace(s, group=g) for s, g in zip(samples, names, strict=True)]
    found.group_source = source
    return found


def _detect(spec: DataSpec, log: WalkLog) -> str:
    root = Path(spec.root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "manifest"
        if is_table(root):
            return "table"
        raise DatasetLayoutError(f"data {root} is a file; a manifest must be a .csv file (path,label[,set,class]), a "
                                 "table a .parquet or .arrow file")
    if spec.real is not None:
        return "paired"
    tree = list(walk(root, WalkLog()))
    names = {name for _, dirs, _ in tree for name in dirs}
    real, fake = spec.dirs("label-first")
    if spec.real_dirs or spec.fake_dirs:
        return "label-first" if looks_label_first(root, real, fake) else "forensynths"
    found = {layout: sorted(names & set(real + fake)) for layout, (real, fake) in DEFAULT_DIRS.items()
             if layout in ("forensynths", "genimage") and names & set(real + fake)}
    if looks_label_first(root, real, fake):
        found["label-first"] = ["ROOT/{real,fake}/<generator>/"]
    elif looks_generator_first(root, tree, real, fake):
        found["generator-first"] = ["ROOT/<generator>/{real,fake}/"]
    tables = [os.path.join(f, n) for f, _, files in tree for n in files if is_table(n)]
    if tables:
        found["table"] = [os.path.relpath(t, root) for t in tables[:3]] + (["…"] if len(tables) > 3 else [])
    if len(found) == 1:
        return next(iter(found))
    if len(found) > 1:
        what = "; ".join(f"{k} {'folders ' if k in ('forensynths', 'genimage') else ''}{v}" for k, v in found.items())
        raise DatasetLayoutError(f"ambiguous layout under {root}: found {what}. Choose one with --layout (or name the "
                                 "folders with --real-dirs/--fake-dirs, e.g. --real-dirs nature,0_real "
                                 "--fake-dirs ai,1_fake)")
    if "real" in names:
        pairs = any("real" in dirs and "fake" in dirs for _, dirs, _ in tree)
        return REAL_FAKE if pairs else "diffusionforensics"
    top = sorted(p.name for p in root.iterdir() if p.is_dir())[:12]
    n = len(images_under(root, log))
    raise DatasetLayoutError(
        f"no known layout under {root}: expected ForenSynths folders ROOT/<set>/[<class>/]{{0_real,1_fake}}, GenImage "
        "ROOT/<gen>/<subset>/{train,val}/{ai,nature}, DiffusionForensics ROOT/{real,<gen>…}, ROOT/{real,fake}/<gen>/, "
        "ROOT/<gen>/{real,fake}/, fake-only sets with --real FOLDER, a CSV manifest or parquet/Arrow tables; or name "
        f"your folders with --real-dirs/--fake-dirs. Found {n} image(s) and the folders {top or 'none'} at the top "
        "level")


def _generator_folders(spec: DataSpec, layout: str, log: WalkLog) -> tuple[Groups, list[str]]:
    """``label-first`` and ``generator-first`` (:mod:`tffkit.genlayouts`)."""

    real, fake = spec.dirs(layout)
    read = read_label_first if layout == "label-first" else read_generator_first
    return read(Path(spec.root), real, fake, log)


def _parts(path: str, root: Path) -> tuple[str, ...]:
    return Path(os.path.relpath(path, root)).parts if os.path.abspath(path) != os.path.abspath(root) else ()


def _label_folders(spec: DataSpec, layout: str, log: WalkLog) -> tuple[Groups, list[str]]:
    """ForenSynths and GenImage: folders named as real/fake at any depth; set = first folder below the root."""
    root = Path(spec.root)
    real, fake = spec.dirs(layout)
    clash = set(real) & set(fake)
    if clash:
        raise DatasetLayoutError(f"folder name(s) {sorted(clash)} are given as both real and fake")
    groups: Groups = {}
    for folder, _, files in walk(root, log):
        parts = _parts(folder, root)
        if parts and parts[-1] in real + fake:
            label = 0 if parts[-1] in real else 1
            inner = list(parts[:-1])
            split = inner.pop() if len(inner) > 1 and inner[-1] in SPLITS else ""
            set_name = inner[0] if inner else root.name
            key = (set_name, "/".join(inner[1:]), split, label)
            groups.setdefault(key, []).extend(image_files(folder, files))
    if not groups:
        raise DatasetLayoutError(
            f"no folder named {', '.join(real + fake)} under {root}. Expected "
            + ("ROOT/<gen>/<subset>/{train,val}/{ai,nature}" if layout == "genimage" else
               "ROOT/<set>/[<class>/]{0_real,1_fake}") + " (other names: --real-dirs/--fake-dirs)")
    found = {k[0] for k in groups}
    others = [p.name for p in sorted(root.iterdir())
              if p.is_dir() and p.name not in found and p.name not in real + fake]
    warnings = [f"folder {name!r} holds no {'/'.join(real + fake)} folder: it is not a set and is left out"
                for name in others]
    return groups, warnings


def _diffusion(spec: DataSpec, layout: str, log: WalkLog) -> tuple[Groups, list[str]]:
    """DiffusionForensics: a folder holding ``real`` and generator folders; each generator is a set."""
    root = Path(spec.root)
    real, _ = spec.dirs(layout)
    groups: Groups = {}
    for folder, dirs, _ in walk(root, log):
        reals = [d for d in dirs if d in real]
        if not reals:
            continue
        shared = sorted(p for d in reals for p in images_under(os.path.join(folder, d), log))
        for gen in (d for d in dirs if d not in real):
            set_name = "/".join(_parts(os.path.join(folder, gen), root))
            groups[(set_name, "", "", 1)] = images_under(os.path.join(folder, gen), log)
            groups[(set_name, "", "", 0)] = list(shared)
    if not groups:
        raise DatasetLayoutError(f"no folder holding a '{'/'.join(real)}' folder beside generator folders under "
                                 f"{root}. Expected DiffusionForensics: ROOT/[<dataset>/]{{real,adm,ddpm,…}}/*.png")
    return groups, []


def _paired(spec: DataSpec, layout: str, log: WalkLog) -> tuple[Groups, list[str]]:
    """Fake-only sets (``ROOT/<set>/…``) paired with the shared real folder ``spec.real``."""
    if spec.real is None:
        raise DatasetLayoutError("layout 'paired' needs the shared real folder (--real FOLDER / data.real)")
    root, shared_root = Path(spec.root), Path(spec.real)
    if not shared_root.is_dir():
        raise DatasetLayoutError(f"shared real folder {shared_root} does not exist or is not a folder")
    real_names, _ = spec.dirs(layout)
    shared = images_under(shared_root, log)
    if not shared:
        raise DatasetLayoutError(f"the shared real folder {shared_root} holds no images")
    inside = os.path.realpath(shared_root)
    groups: Groups = {}
    warnings = []
    set_dirs = sorted(p for p in root.iterdir() if p.is_dir()) or [root]
    for set_dir in set_dirs:
        if inside == os.path.realpath(set_dir) or inside.startswith(os.path.realpath(set_dir) + os.sep):
            continue  # the shared real folder (or the set that holds it) is not a fake set
        name = set_dir.name
        fakes, own_reals = [], []
        for folder, _, files in walk(set_dir, log):  # everything outside a real-named folder is fake
            in_real = any(p in real_names for p in _parts(folder, set_dir))
            (own_reals if in_real else fakes).extend(image_files(folder, files))
        groups[(name, "", "", 1)] = sorted(fakes)
        groups[(name, "", "", 0)] = sorted(own_reals) if own_reals else list(shared)
        if own_reals:
            warnings.append(f"set {name!r} has its own real images ({len(own_reals)}); the shared folder is not used "
                            "for it")
    return groups, warnings


def _choose_split(groups: Groups, split: str | None) -> tuple[Groups, dict[str, str], list[str]]:
    """Keep one split per set: ``split`` when given, else ``val`` (or ``validation``) where a set has several."""
    by_set: dict[str, set[str]] = {}
    for set_name, _, sp, _ in groups:
        by_set.setdefault(set_name, set()).add(sp)
    chosen, warnings = {}, []
    for set_name, splits in by_set.items():
        named = sorted(s for s in splits if s)
        if split is not None:
            if split not in splits:
                raise DatasetLayoutError(f"set {set_name!r} has no {split!r} split (found: {named or 'none'})")
            chosen[set_name] = split
        elif len(splits) > 1:
            pick = next((s for s in ("val", "validation") if s in splits), named[0])
            chosen[set_name] = pick
            warnings.append(f"set {set_name!r} has splits {named}: using {pick!r} (choose with --split)")
        elif named:
            chosen[set_name] = named[0]
    kept = {k: v for k, v in groups.items() if k[0] not in chosen or k[2] == chosen[k[0]]}
    return kept, {k: v for k, v in chosen.items() if v}, warnings


def _select(groups: Groups, spec: DataSpec, layout: str, sets: Sequence[str] | None, max_per_class: int | None,
            max_per_label: int | None, warnings: list[str], split: dict[str, str]) -> Discovery:
    all_sets = sorted({k[0] for k in groups})
    if sets:
        missing = [s for s in sets if s not in all_sets]
        if missing:
            raise DatasetLayoutError(f"set(s) {missing} not found under {spec.root}; sets found: {all_sets}")
        groups = {k: v for k, v in groups.items() if k[0] in set(sets)}
    samples: list[Sample] = []
    taken: dict[tuple[str, int], int] = {}
    for key in sorted(groups):
        set_name, cls, _, label = key
        files = sorted(groups[key])[:max_per_class] if max_per_class is not None else sorted(groups[key])
        for f in files:
            if max_per_label is not None and taken.get((set_name, label), 0) >= max_per_label:
                break
            taken[(set_name, label)] = taken.get((set_name, label), 0) + 1
            samples.append(Sample(f, label, set_name, cls))
    warnings = list(warnings)
    for set_name in sorted({k[0] for k in groups}):
        n = [sum(1 for s in samples if s.set == set_name and s.label == lab) for lab in (0, 1)]
        if n == [0, 0]:
            folders = sorted({k[1] or "." for k in groups if k[0] == set_name})
            warnings.append(f"set {set_name!r} holds no images (classes {folders}); it is left out")
        elif 0 in n:
            which = "fake" if n[0] == 0 else "real"
            warnings.append(f"set {set_name!r} has only {which} images: AP and the calibrated threshold are "
                            "undefined for it")
    if not samples:
        raise DatasetLayoutError(f"the {layout} layout under {spec.root} holds no images (sets "
                                 f"{sorted({k[0] for k in groups})}; extensions are "
                                 f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    return Discovery(samples, layout, spec, warnings, split)
