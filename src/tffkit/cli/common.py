"""Arguments of the ``tff`` subcommands: built from each command's options class (:func:`add_options`,
:func:`options_of`), plus the data flags (a :class:`~tffkit.layouts.DataSpec`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

GROUP_TITLES = {"intervals": "intervals (cluster bootstrap over groups, docs/algorithms.md §10)"}


def add_options(p: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (), required: tuple[str, ...] = (),
                only: tuple[str, ...] | None = None, **help_of: str) -> None:
    """One flag per field of the options class ``cls`` (tffkit.jobs.options), its default, help and choices from
    the field; ``skip``: fields that are not flags of this command (``only``: the fields that are); ``required``:
    fields that must be given; ``help_of``: a command's own help for a shared field."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", True) or (only is not None and f.name not in only):
            continue
        title = GROUP_TITLES.get(meta.get("group") or "")
        target = groups.setdefault(title, p.add_argument_group(title)) if title else p
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": f.name, "help": help_of.get(f.name, meta.get("help", ""))}
        default = None if f.default is dataclasses.MISSING else f.default
        if isinstance(default, bool) and meta.get("nargs") is None:
            kw["action"] = "store_false" if default else "store_true"
        else:
            kw.update(default=list(default) if isinstance(default, tuple) else default,
                      type=meta.get("type") or (type(default) if default is not None else str))
            for key in ("nargs", "metavar", "const"):
                if meta.get(key) is not None:
                    kw[key] = meta[key]
            if meta.get("choices") and meta.get("type") is None:
                kw["choices"] = meta["choices"]
        if f.name in required or f.default is dataclasses.MISSING:
            kw["required"] = True
        target.add_argument(flag, **kw)


def options_of(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """The options object of ``cls`` from parsed arguments (sequences as tuples) and ``given`` values."""
    values = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name) and f.name not in given:
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values, **given)
















DATA_HELP = ("data root (ForenSynths <set>/[<class>/]{0_real,1_fake}, GenImage, DiffusionForensics, fake-only sets "
             "with --real) or a CSV manifest path,label[,set,class]")


def layout_args(p: argparse.ArgumentParser) -> None:
    """--layout/--real-dirs/--fake-dirs/--real/--split/--small-images/--group-pattern (how the data is read and
    prepared: the fields of a DataSpec, with its defaults)."""
    from ..layouts import LAYOUTS, DataSpec
    from ..preprocess import SMALL_IMAGES

    d = {f.name: f.default for f in dataclasses.fields(DataSpec)}
    g = p.add_argument_group("data layout")
    g.add_argument("--layout", default=d["layout"], choices=LAYOUTS, help="how labels are read (auto: found from the "
                   "folders; an ambiguous tree is an error)")
    g.add_argument("--real-dirs", default=d["real_dirs"], metavar="NAMES", help="folder names meaning real, "
                   "comma-separated (default per layout: 0_real; GenImage nature; DiffusionForensics real)")
    g.add_argument("--fake-dirs", default=d["fake_dirs"], metavar="NAMES", help="folder names meaning fake (default "
                   "1_fake; GenImage ai)")
    g.add_argument("--real", default=d["real"], metavar="FOLDER", help="shared real images for fake-only sets "
                   "(layout paired: UniversalFakeDetect's diffusion sets, Synthbuster + RAISE)")
    g.add_argument("--split", default=d["split"], help="train/val/test folder to use where a set has several "
                   "(default val)")
    g.add_argument("--small-images", default=d["small_images"], choices=SMALL_IMAGES,
                   help="images smaller than the crop: upscale (shorter side resized up first, Wang et al.'s advice) "
                        "or pad (zeros)")
    g.add_argument("--group-pattern", default=d["group_pattern"], metavar="REGEX",
                   help="a regular expression on the file name whose first capture group (or (?P<group>…)) names the "
                        "image's source (photograph, prompt): intervals resample these groups. Default: a manifest's "
                        "group column, else the class folder, else each image is its own group")


def data_flags(p: argparse.ArgumentParser, name: str = "data", required: bool = True, help: str | None = None) -> None:
    """--data (or --<name>) and the layout flags: where the images are and how their labels are read."""
    p.add_argument("--" + name, required=required, default=None, help=help or DATA_HELP)
    layout_args(p)


def data_spec(args: argparse.Namespace, attr: str = "data"):
    """The :class:`~tffkit.data.DataSpec` of ``args.<attr>`` with the layout flags (None without data)."""
    from ..layouts import DataSpec

    root = getattr(args, attr, None)
    if root is None:
        return None
    layout = {f.name: getattr(args, f.name) for f in dataclasses.fields(DataSpec) if f.name != "root"}
    return DataSpec(root, **layout)








def is_main_process() -> bool:
    """True on rank 0 (or without torchrun): only it prints tables."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0










def print_unreadable(rows: list[dict], where: str, limit: int = 20) -> None:
    """List the files that could not be read (the first ``limit``; all of them are in ``where``)."""
    if not rows:
        return
    print(f"skipped {len(rows)} unreadable file(s):")
    for row in rows[:limit]:
        print(f"  {row['path']}: {row['error']}")
    if len(rows) > limit:
        print(f"  … and {len(rows) - limit} more (all in {where})")



