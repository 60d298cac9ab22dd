"""Report section "Detector cards": links to the pages of the study's card step (``OUT/card/*.html``, one per
detector) and, for a DEAR detector, the reading of its channel gate against the FF-RS ranking (``OUT/gate/gate.json``,
the gate step)."""

from __future__ import annotations

import html
from pathlib import Path

from ..results import read_json

PAGES = {"detector": "the detector", "color_robust": "the colour-robust detector"}


def section_cards(out: Path) -> dict | None:
    pages = sorted((out / "card").glob("*.html"), key=lambda p: list(PAGES).index(p.stem) if p.stem in PAGES else 9)
    gate = read_json(out / "gate" / "gate.json") if (out / "gate" / "gate.json").is_file() else {}
    if not pages and not gate:
        return None
    items = "".join(f"<li><a href='card/{html.escape(p.name)}'>{html.escape(PAGES.get(p.stem, p.stem))}</a> "
                    f"(<a href='card/{html.escape(p.with_suffix('.md').name)}'>Markdown</a>)</li>" for p in pages)
    body = f"<ul>{items}</ul>" if items else ""
    if gate:
        body += (f"<p><strong>DEAR's gate and FF-RS.</strong> {html.escape(gate.get('sentence', ''))} "
                 "(gate/gate.csv; per channel: gate/gate_units.csv)</p>")
    sentence = ("One page per detector: identity, detection per generator with intervals, robustness, the top units "
                "and what they respond to, explanation examples — what a reader can take in a minute, drawn from "
                "this study's files.")
    return {"id": "cards", "title": "Detector cards", "sentence": html.escape(sentence), "body": body, "figures": []}
