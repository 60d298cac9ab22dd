"""Detector cards: one page per detector of a study (Markdown and HTML), drawn from the study's files only.

A card holds the detector's identity (architecture, checkpoint SHA-256, the licence of the zoo entry's released
weights, preprocessing), AP and real/fake accuracy per generator with their 95% intervals (``evaluate/metrics_ci.csv``),
the change without colour (``color/``: AP colour → grayscale, Δ median p(fake) with its interval, the share of
colour-conditional top units), how AP and the real and fake accuracies move under JPEG, resizing, blur and grayscale
with the real/fake asymmetry (``robustness/``), the top units of its FF-RS ranking (``rank/ffrs.csv``) with what each
responds to (its strongest fake's LRP-max patch, ``lrpmax/``; colour-conditional or not, ``color/mood_tests.csv``),
DEAR's gate against the ranking (``gate/``, DEAR detectors only), two or three explanation examples (LRP-max
overlays) and links to the figures. No model is run. The universal detector's files are the study's folders; the
colour-robust detector's are under ``color_robust/``. A section whose step did not run says so. The job that writes
the pages: :func:`tffkit.jobs.card.card` (``tff card``, the study's card step).
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pandas as pd

Section = tuple[str, list]  # (title, blocks); a block is str (a paragraph), ("table", header, rows) — a cell is
# text or (text, link) — or ("links", [(link, text), …])
TOP_UNITS = 10
EXAMPLES = 3
NO_ROBUSTNESS = ("Not measured: the study has no robustness/robustness.csv (enable the study step "
                 "`steps.robustness`).")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, keep_default_na=False) if path.is_file() else None


def _interval(estimate: float, low: float, high: float, scale: float = 1.0, sign: bool = False) -> str:
    fmt = "{:+.1f}" if sign else "{:.1f}"
    return f"{fmt.format(estimate * scale)} [{fmt.format(low * scale)}, {fmt.format(high * scale)}]"


def _licence(arch: str) -> tuple[str, str]:
    """(licence, paper) of a zoo entry; unknown for other specs."""
    try:
        from .detectors.zoo import resolve

        entry = resolve(arch.split("@")[0])
    except Exception:  # noqa: BLE001 - a python:/timm: spec or an unknown name: not known
        return "not known", ""
    return entry.licence or "not known", entry.paper or ""


def identity(folder: Path, label: str) -> Section:
    """Architecture, checkpoint and its SHA-256, licence, preprocessing, from the first step's run.json found."""
    run = next((r for r in (_json(folder / s / "run.json") for s in ("evaluate", "rank", "color")) if r), {})
    if not run:
        return "Identity", [f"No run.json under {folder} (evaluate, rank, color): the detector is not known."]
    det = run.get("detector", {})
    arch = det.get("arch") or run.get("args", {}).get("arch", "?")
    weights = det.get("weights") or {}
    prep = run.get("preprocessing") or {}
    licence, paper = _licence(arch)
    rows = [("detector", label), ("architecture (--arch)", arch), ("paper", paper or "—"),
            ("checkpoint", weights.get("path") or ("random weights" if det.get("random_weights") else "—")),
            ("checkpoint SHA-256", run.get("checkpoint_sha256", "—")),
            ("backbone file", weights.get("backbone") or "—"),
            ("licence of the released weights", licence),
            ("preprocessing", f"{prep.get('description', '—')} (preset {prep.get('preset', '—')})"),
            ("python code", (det.get("code") or {}).get("path", "—") if isinstance(det.get("code"), dict) else "—")]
    if det.get("random_weights"):
        rows.append(("note", f"RANDOM weights ({det['random_weights']}): the numbers describe an untrained network"))
    return "Identity", [("table", ["field", "value"], [list(map(str, r)) for r in rows])]


def performance(folder: Path) -> Section:
    """AP, real and fake accuracy per set with 95% intervals over groups."""
    ci, metrics = _csv(folder / "evaluate" / "metrics_ci.csv"), _csv(folder / "evaluate" / "metrics.csv")
    if ci is None:
        return "Detection per generator", ["Not measured: the study has no evaluate/metrics_ci.csv."]
    counts = {}
    if metrics is not None:
        rows = metrics[metrics["class"].astype(str) == "all"] if "class" in metrics else metrics
        counts = {str(r["set"]): (r["n_real"], r["n_fake"]) for _, r in rows.iterrows()}
    table = []
    for set_name, part in ci.groupby("set", sort=False):
        by = {r["metric"]: r for _, r in part.iterrows()}
        cells = [_interval(float(by[m]["estimate"]), float(by[m]["low"]), float(by[m]["high"]), 100)
                 if m in by and str(by[m]["estimate"]) != "" else "undef" for m in ("ap", "real_acc", "fake_acc")]
        n = counts.get(str(set_name), ("", ""))
        groups = str(part["groups"].iloc[0]) if "groups" in part else ""
        table.append([str(set_name), *cells, f"{n[0]} / {n[1]}", groups])
    first = ci.iloc[0]
    note = (f"In %, 95% intervals from a cluster bootstrap over groups ({int(first['resamples'])} resamples, seed "
            f"{int(first['seed'])}); accuracies at p(fake) ≥ 0.5.") if "resamples" in ci else "In %."
    return "Detection per generator", [note, ("table", ["set", "AP", "real acc.", "fake acc.", "real / fake images",
                                                        "groups"], table)]


def color(folder: Path) -> Section:
    """AP colour → grayscale, Δ median p(fake) and the colour-conditional share of the top units."""
    metrics = _csv(folder / "color" / "color_metrics.csv")
    if metrics is None:
        return "Colour", ["Not measured: the study has no color/color_metrics.csv."]
    ap = metrics[metrics["metric"] == "ap"].pivot(index="set", columns="version", values="value")
    median = _csv(folder / "color" / "median_probability_ci.csv")
    share = _csv(folder / "color" / "colour_conditional_paired.csv")
    med = {str(r["set"]): _interval(r["estimate"], r["low"], r["high"], sign=True)
           for _, r in (median.iterrows() if median is not None else [])}
    cond = {str(r["set"]): f"{r['effect_percent']:.0f} [{r['effect_low']:.0f}, {r['effect_high']:.0f}] of "
                           f"{int(r['k'])}" for _, r in (share.iterrows() if share is not None else [])}
    rows = [[str(s), f"{float(r.get('colour', float('nan'))):.1f} → {float(r.get('grayscale', float('nan'))):.1f}",
             med.get(str(s), "—"), cond.get(str(s), "—")] for s, r in ap.iterrows()]
    return "Colour", ["AP in % on colour and grayscale images; Δ median p(fake) without colour in percentage points "
                      "(95% interval over groups; an interval that includes 0 shows no change); the share (%) of "
                      "the top units that are colour-conditional by the paired effect size, with its interval.",
                      ("table", ["set", "AP colour → gray", "Δ median p(fake), pp", "colour-conditional top units, %"],
                       rows)]


def _moved(row: pd.Series) -> str:
    """``80.0 → 60.0 (Δ -20.0 [-30.0, -10.0])`` in %, from a robustness.csv row; ``undef`` where not defined."""
    try:
        values = [float(row[k]) for k in ("clean", "perturbed", "change", "low", "high")]
    except ValueError:  # an empty cell: the metric is undefined (no reals or no fakes)
        return "undef"
    if not all(v == v for v in values):  # NaN
        return "undef"
    return f"{100 * values[0]:.1f} → {100 * values[1]:.1f} (Δ {_interval(*values[2:], 100, sign=True)})"


def robustness(folder: Path) -> Section:
    """AP and real/fake accuracy clean → perturbed with the paired change's interval, and the asymmetry verdicts."""
    table, info = _csv(folder / "robustness" / "robustness.csv"), _json(folder / "robustness" / "robustness.json")
    if table is None:
        return "Robustness to perturbations", [NO_ROBUSTNESS]
    rows = []
    for (name, set_name), part in table.groupby(["perturbation", "set"], sort=False):
        by = {r["metric"]: r for _, r in part.iterrows()}
        cells = [_moved(by[m]) if m in by else "—" for m in ("ap", "real_acc", "fake_acc")]
        rows.append([str(name), str(set_name), *cells])
    first = table.iloc[0]
    blocks: list = [f"In %: clean → perturbed, then the change in percentage points with its paired 95% interval over "
                    f"groups (the same images and resamples clean and perturbed; {int(first['resamples'])} resamples, "
                    f"seed {int(first['seed'])}); accuracies at p(fake) > 0.5. An interval that includes 0 shows no "
                    "change.",
                    ("table", ["perturbation", "set", "AP", "real acc.", "fake acc."], rows)]
    for v in info.get("asymmetry", []):
        blocks.append(f"{v['perturbation']} (mean over sets): {v['verdict']}")
    return "Robustness to perturbations", blocks


def _link(href: Path, text: str, out: Path) -> tuple[str, str]:
    """A table cell that links ``href`` (relative to the card's folder ``out``)."""
    return (text, os.path.relpath(href, out))


def _responses(folder: Path, out: Path) -> tuple[dict, dict]:
    """What each unit responds to, from the study's files: (layer, channel) → its strongest fake's LRP-max patch
    (``lrpmax/lrpmax_index.csv``, rank 1 of the first set), and key → the colour sets where the unit's activation
    on the fakes changes without colour by the paired effect size (``color/mood_tests.csv``)."""
    index, mood = _csv(folder / "lrpmax" / "lrpmax_index.csv"), _csv(folder / "color" / "mood_tests.csv")
    patches = {}
    if index is not None and len(index):
        first = index[index["rank"].astype(int) == 1].drop_duplicates(["layer", "channel"])
        patches = {(str(r["layer"]), int(r["channel"])): _link(folder / "lrpmax" / str(r["patch"]),
                                                              f"patch ({r['set']})", out)
                   for _, r in first.iterrows()}
    colour = {}
    if mood is not None and len(mood):
        for key, part in mood.groupby("key", sort=False):
            hit = [str(s) for s, c in zip(part["set"], part["effect_conditional"].astype(str), strict=True)
                   if c == "True"]
            colour[str(key)] = f"in {', '.join(hit)}" if hit else f"no (0 of {len(part)} sets)"
    return patches, colour


def top_units(folder: Path, out: Path, n: int = TOP_UNITS) -> Section:
    """The first ``n`` units of the ranking, with what the ranking rests on and what each unit responds to: its
    strongest fake's LRP-max patch and whether it is colour-conditional."""
    ranking = _csv(folder / "rank" / "ffrs.csv")
    if ranking is None:
        return "Top units (FF-RS)", ["Not ranked: the study has no rank/ffrs.csv."]
    info = _json(folder / "rank" / "ffrs.json")
    patches, colour = _responses(folder, out)
    rows = [[str(int(r["rank"])), str(r["layer"]), str(r["channel"]), f"{float(r['omega']):.4f}",
             str(r.get("unit", "")), patches.get((str(r["layer"]), int(r["channel"])), "—"),
             colour.get(str(r.get("key", "")), "—")] for _, r in ranking.head(n).iterrows()]
    blocks: list = []
    if info:
        units = info.get("n_feature_maps", len(ranking))
        blocks.append(f"ω over {info.get('fakes_used', '?')} confident fakes (p ≥ {info.get('min_prob', '?')}) of "
                      f"{info.get('images_seen', '?')} source images; {units} units.")
    if info.get("ranking_warning"):
        blocks.append(f"Warning: {info['ranking_warning']}.")
    blocks.append("What a unit responds to: the image region of the fake that activates it most (LRP-max, lrpmax "
                  "step; — where the unit is not among its T-FF) and whether its activation on the fakes changes "
                  "without colour (colour-conditional by the paired effect size, per test set; color step).")
    return "Top units (FF-RS)", [*blocks, ("table", ["rank", "layer", "channel", "ω", "kind", "strongest fake",
                                                     "colour-conditional"], rows)]


def examples(folder: Path, out: Path, n: int = EXAMPLES) -> Section:
    """``n`` explanation examples: for each of the first ``n`` T-FF of the LRP-max step, the LRP-max relevance of
    its strongest fake (overlay and patch) with the image it comes from."""
    index = _csv(folder / "lrpmax" / "lrpmax_index.csv")
    if index is None or not len(index) or n < 1:
        return "Explanation examples", ["None: no lrpmax/lrpmax_index.csv for this detector (the study step "
                                        "`steps.lrpmax` explains the study's detector)." if n else
                                        "None asked for (examples: 0)."]
    first = index[index["rank"].astype(int) == 1].drop_duplicates("tff").sort_values("tff", kind="stable").head(n)
    blocks: list = [f"LRP-max (relevance seeded at the unit's most activated neuron, propagated to the pixels) on the "
                    f"fake that activates each of the first {len(first)} T-FF most; the box is the patch."]
    for _, r in first.iterrows():
        blocks.append(f"T-FF {int(r['tff'])}, `{r['key']}` — set {r['set']}, image {r['image']}, max activation "
                      f"{float(r['activation']):.3g}.")
        blocks.append(("links", [_link(folder / "lrpmax" / str(r[c]), f"{c} of T-FF {int(r['tff'])}", out)[::-1]
                                 for c in ("overlay", "patch")]))
    return "Explanation examples", blocks


def gate(folder: Path) -> Section | None:
    """DEAR's channel gate against the study's FF-RS ranking (``gate/gate.json``, the gate step); None when the
    study has no gate step."""
    info = _json(folder / "gate" / "gate.json")
    if not info:
        return None
    rows = [[str(r["k"]), str(r["kept_in_top_k"]), f"{float(r['expected']):.1f}", f"{float(r['p_enriched']):.3g}",
             f"{float(r['p_depleted']):.3g}"] for r in info.get("per_k", [])]
    return "Unit selection: DEAR's gate and FF-RS", [
        info.get("sentence", ""), ("table", ["k", "kept in top k", "expected", "p (enriched)", "p (depleted)"], rows)]


def figures(folder: Path, study: Path, out: Path) -> Section:
    """Links to the explanation figures that exist, relative to the card's folder."""
    found = sorted((folder / "lrpmax").glob("collage_*.png")) + \
        [p for p in (folder / "rank" / "topk_per_layer.png", folder / "rank" / "omega_distribution.png",
                     folder / "color" / "median_probability.png", study / "report.html") if p.is_file()]
    if not found:
        return "Explanation figures", ["None in the study (no lrpmax, rank or color figures)."]
    return "Explanation figures", [("links", [(os.path.relpath(p, out), p.name) for p in found])]


def detectors_of(study: Path) -> list[tuple[str, Path, str]]:
    """(file stem, folder, label) of each detector of the study: the universal one, then the colour-robust one."""
    cfg = _json(study / "study.json")
    label = (cfg.get("detector") or {}).get("label") or (cfg.get("detector") or {}).get("arch") or "detector"
    out = [("detector", study, label)]
    if (study / "color_robust").is_dir():
        cr = ((cfg.get("steps") or {}).get("color_robust") or {}).get("label") or "colour-robust"
        out.append(("color_robust", study / "color_robust", cr))
    return out


def card_sections(study: Path, folder: Path, label: str, out: Path, *, units: int = TOP_UNITS,
                  n_examples: int = EXAMPLES) -> list[Section]:
    """The sections of one detector's card (``out``: the card's folder, links are relative to it)."""
    found = [identity(folder, label), performance(folder), color(folder), robustness(folder),
             top_units(folder, out, units), gate(folder), examples(folder, out, n_examples),
             figures(folder, study, out)]
    return [s for s in found if s is not None]


def to_markdown(title: str, sections: list[Section]) -> str:
    """The card as Markdown."""
    def cell(v: str | tuple[str, str]) -> str:
        if isinstance(v, tuple):  # (text, link)
            return f"[{cell(v[0])}]({v[1]})"
        return v.replace("|", "\\|").replace("\n", " ")
    lines = [f"# {title}", ""]
    for name, blocks in sections:
        lines += [f"## {name}", ""]
        for b in blocks:
            if isinstance(b, str):
                lines += [b, ""]
            elif b[0] == "table":
                lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in b[2]] + [""]
            else:
                lines += [f"- [{text}]({link})" for link, text in b[1]] + [""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _cell(v: str | tuple[str, str]) -> str:
    """A table cell as HTML: text, or (text, link) as a link."""
    if isinstance(v, tuple):
        return f"<a href='{html.escape(v[1])}'>{html.escape(v[0])}</a>"
    return html.escape(v)


def to_html(title: str, sections: list[Section]) -> str:
    """The card as one self-contained HTML page (figures linked, not embedded)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}img{max-width:100%}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for name, blocks in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for b in blocks:
            if isinstance(b, str):
                parts.append(f"<p>{_inline(b)}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in b[2])
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                items = "".join(f"<li><a href='{html.escape(link)}'>{html.escape(text)}</a>"
                                + (f"<br><img src='{html.escape(link)}' alt='{html.escape(text)}'>"
                                   if link.endswith(".png") else "") + "</li>" for link, text in b[1])
                parts.append(f"<ul>{items}</ul>")
    return "\n".join(parts + ["</body></html>"])
