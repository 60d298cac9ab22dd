"""Argument groups shared by the ``tff`` subcommands."""

from __future__ import annotations

import argparse
from typing import Any

MAX_PER_CLASS_HELP = "use only the first N images (by file name) of each (set, class, label) folder; default: all"


def detector_args(p: argparse.ArgumentParser, weights_required: bool = False) -> None:
    """--arch/--weights/--device/--batch-size/--workers/--no-progress."""
    from ..detectors import ARCHITECTURES

    p.add_argument("--arch", default="resnet50", choices=sorted(ARCHITECTURES), help="detector architecture")
    p.add_argument("--weights", required=weights_required, default=None,
                   help="checkpoint: {'model': sd} (Wang et al.), {'state_dict': sd} or a bare state dict")
    device_args(p)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward/backward pass on each process")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading worker processes per process; default: this process's cores minus one, at most 8")
    progress_args(p)


def device_args(p: argparse.ArgumentParser) -> None:
    """--device."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto picks CUDA when present)")


def progress_args(p: argparse.ArgumentParser) -> None:
    """--no-progress."""
    p.add_argument("--no-progress", action="store_true",
                   help="print no progress (by default a bar on a terminal, a line every 5%% otherwise)")


def data_args(p: argparse.ArgumentParser, sets: bool = True, perturbations: bool = True) -> None:
    """--data/--sets/--preset/--max-per-class and, optionally, the perturbations."""
    p.add_argument("--data", required=True, help="root holding <set>/[<class>/]{0_real,1_fake} folders")
    if sets:
        p.add_argument("--sets", nargs="+", default=None, help="sets (first folder level) to use; default all")
    p.add_argument("--preset", default="center224", choices=["center224", "full"],
                   help="center224: CenterCrop 224 (Wang's eval); full: whole images, batched by size")
    p.add_argument("--max-per-class", type=int, default=None, metavar="N", help=MAX_PER_CLASS_HELP)
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
                "zplus_fallback": "--zplus-fallback"}


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
