"""Arguments of the ``tff`` subcommands: built from each command's options class (:func:`add_options`,
:func:`options_of`), plus the data flags (a :class:`~tffkit.layouts.DataSpec`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

GROUP_TITLES = {"intervals": "intervals (cluster bootstrap over groups, docs/algorithms.md §10)"}


def add_options(p: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (), required: tuple[str, ...] = (),
                **help_of: str) -> None:
    """One flag per field of the options class ``cls`` (tffkit.jobs.options), its default, help and choices from
    the field; ``skip``: fields that are not flags of this command; ``required``: fields that must be given;
    ``help_of``: a command's own help for a shared field."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", True):
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

MAX_PER_CLASS_HELP = "use only the first N images (by file name) of each (set, class, label) folder; default: all"

ARCH_HELP = ("detector: a zoo name (wang2020 = resnet50, corvi2023, npr2024, univfd2023, rine2024, drct2024, "
             "efficientnet_b0_lukemelas …; see tff detectors), another built-in architecture, torchvision:<name>, "
             "timm:<name> or python:<module or file.py>:<factory> (your model, one or two logits)")
PRESET_HELP = ("detector: the detector's own resize and crop (tff detectors); center224: no resize, centre crop 224 "
               "(Wang's eval); full: whole images, batched by size. Normalisation is always the detector's")


def detector_args(p: argparse.ArgumentParser, weights_required: bool = False) -> None:
    """--arch/--weights/--backbone-weights/--random-weights/--trust-checkpoint/--device/--batch-size/--workers/
    --no-progress."""
    p.add_argument("--arch", default="resnet50", help=ARCH_HELP)
    p.add_argument("--weights", required=weights_required, default=None,
                   help="checkpoint in the detector's released layout (e.g. {'model': sd} for wang2020, a bare state "
                        "dict for npr2024), or one tffkit wrote; required unless --random-weights")
    p.add_argument("--backbone-weights", default=None, metavar="PATH",
                   help="univfd2023/rine2024: the CLIP ViT-L/14 weights (OpenAI ViT-L-14.pt or open_clip's "
                        ".bin/.safetensors); --weights is then the released head file")
    p.add_argument("--random-weights", nargs="?", const="all", default=None, type=random_part, metavar="PART",
                   help="run a randomly initialised detector (no --weights); its results describe an untrained net. "
                        "PART backbone or head: only that part of univfd2023/rine2024 is random, the other is read "
                        "from its file (--weights HEAD or --backbone-weights CLIP), and the output says so")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints holding pickled Python objects (unpickling can run code; default: refuse)")
    trust_code_arg(p)
    device_args(p)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward/backward pass on each process")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading worker processes per process; default: this process's cores minus one, at most 8")
    progress_args(p)


def random_part(value: str) -> str:
    """--random-weights PART: all, backbone or head."""
    if value not in ("all", "backbone", "head"):
        raise argparse.ArgumentTypeError(f"{value!r} is not one of all, backbone, head")
    return value


def trust_code_arg(p: argparse.ArgumentParser) -> None:
    """--trust-code."""
    p.add_argument("--trust-code", action="store_true",
                   help="allow a python:<file.py or module>:<factory> detector, which runs that Python code (like "
                        "--trust-checkpoint for pickles; default: refuse). The file's SHA-256 goes to run.json")


def device_args(p: argparse.ArgumentParser) -> None:
    """--device."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto picks CUDA when present)")


def progress_args(p: argparse.ArgumentParser) -> None:
    """--no-progress."""
    p.add_argument("--no-progress", action="store_true",
                   help="print no progress (by default a bar on a terminal, a line every 5%% otherwise)")


def weights(args: argparse.Namespace):
    """The :class:`~tffkit.detectors.Weights` given on the command line (None when nothing was given)."""
    from ..detectors import Weights

    random = getattr(args, "random_weights", None)
    w = Weights(args.weights, getattr(args, "backbone_weights", None), getattr(args, "trust_checkpoint", False),
                True if random == "all" else random or False)
    return None if w == Weights() else w


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


def preset_arg(p: argparse.ArgumentParser) -> None:
    """--preset: the spatial preprocessing."""
    from ..preprocess import PRESETS

    p.add_argument("--preset", default="detector", choices=PRESETS, help=PRESET_HELP)


def data_args(p: argparse.ArgumentParser, sets: bool = True, perturbations: bool = True) -> None:
    """--data/--sets/--preset/--max-per-class, the layout options and, optionally, the perturbations."""
    p.add_argument("--data", required=True, help=DATA_HELP)
    if sets:
        p.add_argument("--sets", nargs="+", default=None, help="sets (first folder level) to use; default all")
    preset_arg(p)
    p.add_argument("--max-per-class", type=int, default=None, metavar="N", help=MAX_PER_CLASS_HELP)
    layout_args(p)
    if perturbations:
        p.add_argument("--grayscale", action="store_true", help="ITU-R 601 luma replicated to RGB")
        p.add_argument("--jpeg", type=int, default=None, metavar="Q", help="JPEG re-compression at quality Q")
        p.add_argument("--blur", type=float, default=None, metavar="SIGMA", help="Gaussian blur sigma")
        p.add_argument("--resize", type=float, default=None, metavar="FACTOR", help="resize by a factor")


def perturbation(args: argparse.Namespace) -> Any:
    """The perturbation (:class:`tffkit.data.Perturbation`) described by the data arguments."""
    from ..data import Perturbation

    return Perturbation(getattr(args, "grayscale", False), getattr(args, "jpeg", None),
                        getattr(args, "blur", None), getattr(args, "resize", None))


def is_main_process() -> bool:
    """True on rank 0 (or without torchrun): only it prints tables."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


SWITCH_FLAGS = {"prob_dtype": "--prob-dtype", "cal_compare": "--cal-compare", "neuron_seed": "--neuron-seed",
                "bounds": "--bounds", "activation_site": "--activation-site", "dropout_site": "--site",
                "zplus_fallback": "--zplus-fallback", "patch_box": "--patch-box", "random_k": "--random-k",
                "rank_crop": "--rank-crop"}


def paper_code_args(p: argparse.ArgumentParser, *switches: str) -> None:
    """--paper-code and a flag per named switch (tffkit.conventions); a flag given explicitly overrides the preset."""
    from ..conventions import SWITCHES

    p.add_argument("--paper-code", action="store_true",
                   help="the public code's behaviour for every switch of this command (listed below; a switch "
                        "given explicitly overrides it) — see docs/algorithms.md")
    for name in switches:
        sw = SWITCHES[name]
        p.add_argument(SWITCH_FLAGS[name], dest=name, choices=sw.choices, default=argparse.SUPPRESS,
                       help=f"{sw.help} [default: {sw.ours}; with --paper-code: {sw.paper_code}]")


def switches(args: argparse.Namespace, *names: str) -> dict:
    """``paper_code`` and the named switches as given on the command line (None where not given)."""
    return {"paper_code": bool(getattr(args, "paper_code", False)), **{n: getattr(args, n, None) for n in names}}


def lrp_args(p: argparse.ArgumentParser) -> None:
    """--attention: the LRP rule inside attention layers (transformer detectors)."""
    p.add_argument("--attention", default="attnlrp", choices=["attnlrp", "cp"],
                   help="attention rule: AttnLRP (softmax and uniform product rules) or CP-LRP (attention weights "
                        "held constant, relevance through the values only)")


def print_unreadable(rows: list[dict], where: str, limit: int = 20) -> None:
    """List the files that could not be read (the first ``limit``; all of them are in ``where``)."""
    if not rows:
        return
    print(f"skipped {len(rows)} unreadable file(s):")
    for row in rows[:limit]:
        print(f"  {row['path']}: {row['error']}")
    if len(rows) > limit:
        print(f"  … and {len(rows) - limit} more (all in {where})")


def uncertainty_args(p: argparse.ArgumentParser) -> None:
    """--resamples and --bootstrap-seed: the cluster bootstrap of the 95% intervals over groups (docs/algorithms.md
    §10)."""
    from ..analysis.intervals import RESAMPLES, SEED

    g = p.add_argument_group("intervals (cluster bootstrap over groups, docs/algorithms.md §10)")
    g.add_argument("--resamples", type=int, default=RESAMPLES, metavar="B",
                   help="bootstrap resamples of the groups per interval")
    g.add_argument("--bootstrap-seed", type=int, default=SEED, help="seed of the resamples")


def uncertainty(args: argparse.Namespace) -> dict:
    """The interval options as keyword arguments (``resamples``, ``bootstrap_seed``); a count below 1 is refused."""
    if args.resamples < 1:
        raise ValueError(f"--resamples must be at least 1 (got {args.resamples})")
    return {"resamples": args.resamples, "bootstrap_seed": args.bootstrap_seed}
