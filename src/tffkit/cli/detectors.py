"""List the detector zoo: for each published detector its paper, backbone, preprocessing, the weight files it
expects and their key layout, the licence of the original weights, how p(fake) is read from its output, and the
tffkit analyses verified on it. --arch of every command also takes torchvision:<name>, timm:<name> and
python:<module>:<factory>."""

from __future__ import annotations

import argparse
import json

HELP = "list the detector zoo (papers, preprocessing, weight files and layouts, licences)"
FIELDS = (("paper", "paper"), ("backbone", "backbone"), ("preprocessing", "preprocessing"), ("weights", "files"),
          ("key layout", "layout"), ("licence", "licence"), ("p(fake)", "polarity"), ("verified", "verified"),
          ("notes", "notes"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", help="only these entries (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from ..detectors.zoo import ZOO, resolve

    names = args.names or [n for n in ZOO if n != "resnet50"]
    entries = [resolve(n).listing() for n in names]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        print(e["name"])
        for label, key in FIELDS:
            value = ", ".join(e[key]) if isinstance(e[key], list) else e[key]
            if value:
                print(f"  {label + ':':15s}{value}")
    print("\n--arch also takes torchvision:<name>, timm:<name>, python:<module or file.py>:<factory>; every zoo "
          "entry has a @tiny variant (random weights, tests). Weights are read with torch.load(weights_only=True).")
    return 0
