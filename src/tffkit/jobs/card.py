"""``tff card`` (and the study's card step): one page per detector of a study, Markdown and HTML, drawn from the
study's files alone — no model is built and no image read (the sections: :mod:`tffkit.card`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .options import option


@dataclass(frozen=True, kw_only=True)
class CardOptions:
    """Options of ``tff card`` (and of a study's card step)."""

    top_units: int = option(10, "units of the FF-RS ranking listed, each with what it responds to (its strongest "
                            "fake's LRP-max patch, colour-conditional or not)", metavar="N")
    examples: int = option(3, "explanation examples: the LRP-max overlay of the strongest fake of each of the first N "
                           "T-FF (0: none)", metavar="N")


def card(study: str | os.PathLike, *, options: CardOptions = CardOptions(),
         out: str | os.PathLike | None = None) -> list[Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` for each detector of ``study`` (the universal one, ``detector``;
    the colour-robust one, ``color_robust``) and ``run.json`` into ``out`` (default ``STUDY/cards``); returns the
    Markdown files. Figures are linked relative to ``out``."""
    from ..card import card_sections, detectors_of, to_html, to_markdown
    from ..outputs import run_folder
    from ..results import RunRecord, atomic_write

    study = Path(study)
    if not (study / "study.json").is_file() and not (study / "evaluate").is_dir():
        raise FileNotFoundError(f"{study} is not a study folder (no study.json or evaluate/ in it)")
    if options.top_units < 1 or options.examples < 0:
        raise ValueError(f"--top-units must be ≥ 1 and --examples ≥ 0 (got {options.top_units}, {options.examples})")
    final = Path(out) if out is not None else study / "cards"
    record = RunRecord("card", {"study": str(study), "out": str(final), "top_units": options.top_units,
                                "examples": options.examples})
    written = []
    with run_folder(final) as folder:
        for stem, det_folder, label in detectors_of(study):
            sections = card_sections(study, det_folder, label, final.absolute(), units=options.top_units,
                                     n_examples=options.examples)
            title = f"Detector card: {label}"
            for suffix, render in ((".md", to_markdown), (".html", to_html)):
                atomic_write(folder / f"{stem}{suffix}", lambda tmp, r=render, s=sections, t=title: Path(
                    tmp).write_text(r(t, s), encoding="utf-8"))
            written.append(final / f"{stem}.md")
        record.write(folder, cards=[p.name for p in written])
    return written
