"""Detector cards: one page per detector of a study (Markdown and HTML), drawn from the study's files only.

A card holds the detector's identity (architecture, checkpoint SHA-256, the licence of the zoo entry's released
weights, preprocessing), AP and real/fake accuracy per generator with their 95% intervals (``evaluate/metrics_ci.csv``),
the change without colour (``color/``: AP colour → grayscale, Δ median p(fake) with its interval, the share of
colour-conditional top units), the top units of its FF-RS ranking (``rank/ffrs.csv``) and links to the explanation
figures (LRP-max collages, ranking figures, the study report). No model is run. The universal detector's files are
the study's ``evaluate/``, ``rank/``, ``color/``, ``lrpmax/``; the colour-robust detector's are under
``color_robust/``. With the study's ``robustness/`` step: how AP and the real and fake accuracies move under JPEG,
resizing, blur and grayscale (paired intervals over groups) and whether fakes' accuracy falls while reals' rises.
A section whose step did not run says so.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pandas as pd

Section = tuple[str, list]  # (title, blocks); a block is str (a paragraph), ("table", header, rows), ("links", [...])
TOP_UNITS = 10
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


def top_units(folder: Path) -> Section:
    """The first units of the ranking, with what the ranking rests on."""
    ranking = _csv(folder / "rank" / "ffrs.csv")
    if ranking is None:
        return "Top units (FF-RS)", ["Not ranked: the study has no rank/ffrs.csv."]
    info = _json(folder / "rank" / "ffrs.json")
    rows = [[str(int(r["rank"])), str(r["layer"]), str(r["channel"]), f"{float(r['omega']):.4f}",
             str(r.get("unit", ""))] for _, r in ranking.head(TOP_UNITS).iterrows()]
    blocks: list = []
    if info:
        units = info.get("n_feature_maps", len(ranking))
        blocks.append(f"ω over {info.get('fakes_used', '?')} confident fakes (p ≥ {info.get('min_prob', '?')}) of "
                      f"{info.get('images_seen', '?')} source images; {units} units.")
    if info.get("ranking_warning"):
        blocks.append(f"Warning: {info['ranking_warning']}.")
    return "Top units (FF-RS)", [*blocks, ("table", ["rank", "layer", "channel", "ω", "kind"], rows)]


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


def card(study: Path, folder: Path, label: str, out: Path) -> list[Section]:
    """The sections of one detector's card."""
    return [identity(folder, label), performance(folder), color(folder), robustness(folder), top_units(folder),
            figures(folder, study, out)]


def to_markdown(title: str, sections: list[Section]) -> str:
    """The card as Markdown."""
    def cell(v: str) -> str:
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
                body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in b[2])
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                items = "".join(f"<li><a href='{html.escape(link)}'>{html.escape(text)}</a>"
                                + (f"<br><img src='{html.escape(link)}' alt='{html.escape(text)}'>"
                                   if link.endswith(".png") else "") + "</li>" for link, text in b[1])
                parts.append(f"<ul>{items}</ul>")
    return "\n".join(parts + ["</body></html>"])


def write_cards(study: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` for each detector of ``study`` into ``out`` (default
    ``STUDY/cards``); returns the Markdown files."""
    from .outputs import run_folder
    from .results import RunRecord, atomic_write

    study = Path(study)
    if not (study / "study.json").is_file() and not (study / "evaluate").is_dir():
        raise FileNotFoundError(f"{study} is not a study folder (no study.json or evaluate/ in it)")
    final = Path(out) if out is not None else study / "cards"
    record = RunRecord("card", {"study": str(study), "out": str(final)})
    written = []
    with run_folder(final) as folder:
        for stem, det_folder, label in detectors_of(study):
            sections = card(study, det_folder, label, final.absolute())
            title = f"Detector card: {label}"
            atomic_write(folder / f"{stem}.md", lambda tmp, s=sections, t=title: Path(tmp).write_text(
                to_markdown(t, s), encoding="utf-8"))
            atomic_write(folder / f"{stem}.html", lambda tmp, s=sections, t=title: Path(tmp).write_text(
                to_html(t, s), encoding="utf-8"))
            written.append(final / f"{stem}.md")
        record.write(folder, cards=[p.name for p in written])
    return written
