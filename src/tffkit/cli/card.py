"""Write one page per detector of a study (Markdown and HTML), from the study's files alone — no model is run:
identity (architecture, checkpoint SHA-256, licence of the released weights, preprocessing), AP and real/fake
accuracy per generator with 95% intervals, the change without colour, robustness to JPEG/resize/blur/grayscale with
the real/fake asymmetry (the study's robustness step), the top units and links to the explanation figures."""

from __future__ import annotations

import argparse

HELP = "one page per detector of a study (Markdown + HTML), drawn from its files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a study's out folder (holding study.json, evaluate/, rank/ …)")
    p.add_argument("--out", default=None, help="folder for the cards (default: STUDY/cards)")


def run(args: argparse.Namespace) -> int:
    from ..card import write_cards

    for path in write_cards(args.study, args.out):
        print(f"card: {path} (and {path.with_suffix('.html').name})")
    return 0
