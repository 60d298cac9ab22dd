"""Write one page per detector of a study (Markdown and HTML), from the study's files alone — no model is run:
identity (architecture, checkpoint SHA-256, licence of the released weights, preprocessing), AP and real/fake
accuracy per generator with 95% intervals, the change without colour, robustness to JPEG/resize/blur/grayscale with
the real/fake asymmetry (the study's robustness step), the top units with what they respond to, DEAR's gate against
the ranking (DEAR detectors), explanation examples and links to the figures. A study writes its cards itself (the
card step, OUT/card/)."""

from __future__ import annotations

import argparse

from .common import add_options, options_of

HELP = "one page per detector of a study (Markdown + HTML), drawn from its files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.card import CardOptions

    p.add_argument("study", help="a study's out folder (holding study.json, evaluate/, rank/ …)")
    add_options(p, CardOptions)
    p.add_argument("--out", default=None, help="folder for the cards (default: STUDY/cards)")


def run(args: argparse.Namespace) -> int:
    from ..jobs.card import CardOptions, card

    for path in card(args.study, options=options_of(CardOptions, args), out=args.out):
        print(f"card: {path} (and {path.with_suffix('.html').name})")
    return 0
