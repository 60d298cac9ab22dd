"""Report section "Planted artefacts: what the T-FF respond to" (benchmarks with a ground truth, e.g. the demo's)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..results import read_json
from .tables import html_table, mark, relative

DETECTORS = {"universal": "universal detector", "colour_robust": "colour-robust detector"}


def _design(js: dict) -> str:
    """What was planted, from the benchmark's recorded strengths."""
    a = js.get("artefacts") or {}
    gain = (a.get("colour_design") or {}).get("chroma_gain", "?")
    text = ("each generator family's ×2 upsampling operator (a different spectral trace per family) and a colour "
            f"artefact shared by every family (strength {a.get('colour', '?')}: the generators' output layer "
            f"amplifies the chroma ×{gain}, luma unchanged, so grayscale removes it)")
    if a.get("format_shortcut"):
        text += (f", and a format shortcut: reals stored as JPEG (quality {a.get('jpeg_quality')}), fakes as PNG — "
                 "the fake − real comparisons below include that difference")
    return text


def _share(iv: dict | None) -> str:
    """`` (42% [25, 58])``: a share with its interval over groups, or nothing where none was computed."""
    if not iv:
        return ""
    return f" ({100 * iv['estimate']:.0f}% [{100 * iv['low']:.0f}, {100 * iv['high']:.0f}])"


def _summary(name: str, js: dict, table: pd.DataFrame, train: Sequence[str]) -> str:
    n = len(table)
    color = int((table["colour_effect"].abs() >= js["min_effect"]).sum())
    ivs = js.get("share_intervals") or {}
    ups = [f"{mark(fam, train)} {round(share * n)}{_share((ivs.get('upsampling') or {}).get(fam))}"
           for fam, share in js["share_upsampling"].items()]
    over = (f" Shares with 95% intervals over the {ivs['groups']} groups of test images (source photographs; "
            f"cluster bootstrap within set and label, {ivs['resamples']} resamples).") if ivs else ""
    return (f"Of the {DETECTORS.get(name, name)}'s top-{n} T-FF, {color}{_share(ivs.get('colour'))} respond to the "
            f"planted colour artefact; to each family's upsampling trace: {', '.join(ups)}.{over}")


def section_planted(out: Path, train: Sequence[str] = ()) -> dict | None:
    """Per detector: each top T-FF's response to the planted colour artefact (and the colour step's Mood tests)
    and to each family's upsampling trace, with what it responds to; ``train``: the training family (†)."""
    folder = out / "planted"
    found = [(name, folder / name) for name in DETECTORS if (folder / name / "planted.csv").is_file()]
    if not found:
        return None
    body, sentences = "", []
    for name, sub in found:
        js = read_json(sub / "planted.json")
        table = pd.read_csv(sub / "planted.csv", keep_default_na=False)
        sentences.append(_summary(name, js, table, train))
        formats = {c: "2" for c in table.columns if c == "colour_effect" or c.startswith("upsampling_")}
        shown = table.rename(columns={"tff": "T-FF", "colour_effect": "colour response",
                                      "mood_colour_conditional_sets": "colour-conditional sets (Mood)",
                                      "mood_sets": "sets tested", "responds_to": "responds to"})
        shown = shown.rename(columns={c: f"{mark(c.removeprefix('upsampling_'), train)} upsampling response"
                                      for c in table.columns if c.startswith("upsampling_")})
        formats = {shown.columns[list(table.columns).index(c)]: f for c, f in formats.items()}
        body += f"<h3>{html.escape(DETECTORS.get(name, name))}</h3>" + html_table(shown, formats | {"T-FF": "int"})
    first = read_json(found[0][1] / "planted.json")
    sentence = ("These effects were planted by design, not discovered: the benchmark's ground truth "
                f"({relative(Path(first['benchmark'], 'ground_truth.csv'), out)}) "
                "lists every image with the artefacts it carries — "
                f"{_design(first)}. " + " ".join(sentences))
    note = (f"Responses are standardised differences of a T-FF's mean max spatial activation over the test images "
            f"({first['activation_site']} site): upsampling response = fakes − reals of the family, both in grayscale "
            "(the colour artefact is gone there); colour response = the same difference in colour minus the one in "
            "grayscale, averaged over sets. A T-FF responds to an artefact when the response has magnitude "
            f"≥ {first['min_effect']} (a medium effect; negative: less active on the images carrying it). "
            "Colour-conditional sets: in how many test sets Mood's median test found the T-FF's "
            "activations on colour and grayscale fakes different (p ≤ 0.05; the colour step's test).")
    return {"id": "planted", "title": "Planted artefacts: what the T-FF respond to", "sentence": sentence,
            "body": body + f"<p class='note'>{html.escape(note)}</p>", "figures": []}
