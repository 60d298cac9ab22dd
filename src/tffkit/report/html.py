"""The study's self-contained ``report.html``: figures embedded as data URIs, tables, one sentence each.

Drawn only from the files the steps wrote, so a report can be re-drawn without recomputing.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from ..reference import paper_numbers
from ..results import atomic_write, file_sha256, read_json
from .section_card import section_cards
from .section_faithfulness import section_faithfulness
from .section_generator import section_generator
from .section_intervals import color_intervals, dropout_intervals, ffrs_groups, transfer_intervals
from .section_planted import section_planted
from .section_replicates import replicates_file, section_ranking_replicates, section_replicates
from .section_robustness import section_robustness
from .tables import html_table, key_value_table, mark, relative, sets_as_rows, wide_paper_table

TEMPLATE = Path(__file__).with_name("report.html")
TABLE_METRICS = ("ap", "real_acc", "fake_acc")  # Table I.1's order, in every colour table


def _img(path: Path) -> dict | None:
    if not path.is_file() or path.stat().st_size == 0:
        return None
    data = base64.b64encode(path.read_bytes()).decode()
    return {"src": f"data:image/png;base64,{data}", "caption": path.stem.replace("_", " "), "file": path.name}


def _figures(folder: Path, pattern: str = "*.png", limit: int = 12) -> list[dict]:
    """The step's figures matching ``pattern``; beyond ``limit``, the last caption says how many are left out."""
    paths = sorted(folder.glob(pattern))
    shown = [f for f in (_img(p) for p in paths[:limit]) if f]
    if len(paths) > limit and shown:
        shown[-1]["caption"] += f" — {limit} of {len(paths)} figures shown; all are in {folder.name}/"
    return shown


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def section_data(out: Path, study: dict) -> dict | None:
    run = out / "evaluate" / "run.json"
    if not run.is_file():
        return None
    info = read_json(run)
    data = study["data"]
    rows = [("test data", relative(data["test"], out)), ("test sets", ", ".join(data["sets"] or ["all"])),
            ("training family (†)", ", ".join(data["train_set"])),
            ("source set (FF-RS)", relative(data["source"], out)),
            ("images scored", info.get("n_scored")), ("unreadable files skipped", info.get("n_skipped")),
            ("device", info.get("device")), ("tffkit", info["versions"]["tffkit"]),
            ("torch", info["versions"]["torch"]),
            ("conventions", "the public code's (paper_code: true; docs/algorithms.md)" if study.get("paper_code")
             else "tffkit's defaults (docs/algorithms.md lists the public code's alternatives)")]
    body = key_value_table(rows)
    skipped = info.get("skipped") or []
    if skipped:
        body += "<p>Skipped files:</p><ul>" + "".join(
            f"<li>{html.escape(r['path'])}: {html.escape(r['error'])}</li>" for r in skipped[:20]) + "</ul>"
    return {"id": "data", "title": "Data", "body": body, "figures": [],
            "sentence": f"{info.get('n_scored')} test images were scored; {info.get('n_skipped')} unreadable files "
                        "were skipped."}


def _history(folder: Path, out: Path) -> tuple[str, str] | None:
    """A trained checkpoint's history (``tff train`` writes history.csv and run.json beside it)."""
    run, history = folder / "run.json", folder / "history.csv"
    if not (run.is_file() and history.is_file()):
        return None
    info = read_json(run)
    if info.get("command") != "train":
        return None
    best = info.get("best") or {}
    args = info.get("args", {})
    start = f", starting from {relative(args['init'], out)}" if args.get("init") else ", from random weights"
    text = (f"trained by tff train{' (colour-robust)' if args.get('color_robust') else ''} on "
            f"{relative(args['data'], out) if args.get('data') else None}"
            f"{start}: {info.get('epochs')} epoch(s), {info.get('steps')} step(s), stopped by {info.get('stopped')}")
    if best:
        text += (f"; best epoch {best.get('epoch')}: validation accuracy {100 * best.get('val_acc', 0):.1f}%, "
                 f"AP {100 * best.get('val_ap', 0):.1f}%")
    table = pd.read_csv(history)[["epoch", "lr", "train_loss", "val_loss", "val_acc", "val_ap"]]
    return text, html_table(table, {"epoch": "int", "lr": "sci1", "train_loss": "4", "val_loss": "4",
                                    "val_acc": "pct", "val_ap": "pct"})


def _detector(label: str, role: str, arch: str, weights: str | None, run: Path, out: Path) -> tuple[list, str]:
    recorded = read_json(run).get("checkpoint_sha256") if run.is_file() else None
    rows = [("role", role), ("architecture", arch), ("checkpoint", relative(weights, out) or "none (random weights)")]
    if weights and Path(weights).is_file():
        now = file_sha256(weights)
        rows.append(("size", f"{Path(weights).stat().st_size / 2 ** 20:.1f} MiB"))
        rows.append(("SHA-256", recorded or now))
        if recorded and recorded != now:
            rows.append(("warning", f"the file now has SHA-256 {now}: it changed after these results were computed"))
    history = _history(Path(weights).parent, out) if weights else None
    rows.append(("training", history[0] if history else "not trained by tffkit (no history.csv beside it)"))
    body = f"<h3>{html.escape(label)}</h3>" + key_value_table(rows)
    if history:
        body += "<details><summary>Training history (per epoch)</summary>" + history[1] + "</details>"
    return rows, body


def section_detectors(out: Path, study: dict) -> dict | None:
    """Each detector: architecture, checkpoint, its SHA-256 (as recorded when the numbers were computed), its
    training history when tffkit trained it."""
    det, cr = study["detector"], study["steps"]["color_robust"]
    parts = [_detector(det.get("label", "detector"), "universal detector (analysed)", det["arch"], det["weights"],
                       out / "evaluate" / "run.json", out)]
    if cr.get("enabled"):
        train = cr.get("train") or {}
        weights = cr.get("weights")
        if weights is None:
            folder = out / "color_robust" / "train"
            weights = str(folder / ("model_best.pth" if (folder / "model_best.pth").is_file() else "model_last.pth"))
        parts.append(_detector(cr.get("label", "colour-robust"), "colour-robust detector", train.get("arch",
                               det["arch"]), weights, out / "color_robust" / "evaluate" / "run.json", out))
    changed = [rows for rows, _ in parts if any(k == "warning" for k, _ in rows)]
    sentence = (f"{len(parts)} detector(s); each checkpoint is identified by its SHA-256."
                + (" A checkpoint changed after the results were computed: re-run the study." if changed else ""))
    return {"id": "detectors", "title": "Detectors", "sentence": sentence, "figures": [],
            "body": "".join(body for _, body in parts)}


def section_transfer(out: Path, study: dict) -> dict | None:
    path = out / "evaluate" / "metrics.csv"
    if not path.is_file():
        return None
    m = pd.read_csv(path, keep_default_na=False)
    m = m[m["class"] == "all"].copy()
    for c in ("n_real", "n_fake"):
        m[c] = m[c].astype(int)
    cols = ["set", "n_real", "n_fake", "ap", "acc", "real_acc", "fake_acc", "cal_real_acc", "cal_fake_acc"]
    train = set(study["data"]["train_set"])
    per_set = m[m["set"] != "mean"]
    seen, unseen = per_set[per_set["set"].isin(train)], per_set[~per_set["set"].isin(train)]
    sentence = "AP per test set."
    if len(seen) and len(unseen):
        worst = unseen.sort_values("ap").iloc[0]
        sentence = (f"The detector reaches AP {_pct(seen['ap'].astype(float).mean())} on its training family and "
                    f"{_pct(unseen['ap'].astype(float).mean())} on average over the unseen families "
                    f"(lowest: {worst['set']}, {_pct(float(worst['ap']))}; fake accuracy there "
                    f"{_pct(float(worst['fake_acc']))} at threshold 0.5).")
    body = html_table(m[cols], {c: "pct" for c in cols[3:]} | {"n_real": "int", "n_fake": "int"}, train)
    body += ("<p class='note'>AP and accuracies in %, accuracies at p > 0.5 and at the test-calibrated threshold t "
             "(calibrated on each test set itself).</p>")
    ci_body, ci_sentence = transfer_intervals(out / "evaluate", train)
    body += ci_body
    sentence = ci_sentence or sentence
    return {"id": "transfer", "title": "Cross-model transfer", "body": body, "figures": [], "sentence": sentence}


def section_ffrs(out: Path, study: dict) -> dict | None:
    folder = out / "rank"
    if not (folder / "ffrs.json").is_file():
        return None
    s = read_json(folder / "ffrs.json")
    top = pd.read_csv(folder / "ffrs.csv").head(15)
    per_layer = sorted(s["top_k_per_layer"].items(), key=lambda kv: -kv[1])
    lead = ", ".join(f"{k} ({v})" for k, v in per_layer[:3] if v)
    kinds = s.get("unit_kinds", {"conv": s["n_feature_maps"]})
    units = ", ".join(f"{n} {UNIT_NAMES.get(kind, kind)}" for kind, n in kinds.items())
    sentence = (f"ω was computed for {s['n_feature_maps']} units ({units}) in {s['n_layers']} layers from "
                f"{s['fakes_used']} confident fakes; the top-{s['k']} concentrate in {lead}; "
                f"{s['zero_omega_channels']} units never receive positive relevance (ω = 0).")
    if "lowest_retained_share" in s:
        low = s["lowest_retained_share"]
        sentence += (f" The layer reached by the smallest share of the logit's relevance is {low['layer']} "
                     f"({100 * low['share']:.1f}%; relevance_budget.csv has every layer).")
    ties = s.get("ties") or {}
    if ties.get("tied_values"):
        big = ties["largest_tie"]
        sentence += (f" {ties['maps_in_ties']} units share {ties['tied_values']} ω value(s) (largest tie: "
                     f"{big['maps']} units at ω = {big['omega']:.6g}); tied units are ordered by layer, then index.")
    sentence += ffrs_groups(s)
    columns = ["rank", "key", "omega"] + (["unit"] if "unit" in top.columns and len(kinds) > 1 else [])
    return {"id": "ffrs", "title": "Forensic feature relevance (FF-RS, ω)", "sentence": sentence,
            "body": html_table(top[columns], {"rank": "int", "omega": "6"}), "figures": _figures(folder)}


UNIT_NAMES = {"conv": "conv feature maps", "neuron": "MLP neurons", "residual": "residual-stream dimensions",
              "head": "attention heads"}


def section_dropout(out: Path, study: dict) -> dict | None:
    folder = out / "dropout"
    if not (folder / "dropout_summary.csv").is_file():
        return None
    from ..wording import paper_layout

    summary = pd.read_csv(folder / "dropout_summary.csv")
    paper = paper_numbers("dropout", study["detector"]["paper_detector"]) if study["detector"]["paper_detector"] \
        else None
    md = paper_layout(summary, "markdown", paper)
    rows = [line.strip("|").split("|") for line in md.splitlines() if line.startswith("|") and "---" not in line]
    df = pd.DataFrame([[c.strip() for c in r] for r in rows[1:]], columns=[c.strip() for c in rows[0]])
    mean_ap = summary.groupby(["variant", "kind", "k"])["ap"].mean().reset_index()
    k = int(mean_ap[mean_ap["kind"] == "top"]["k"].max()) if (mean_ap["kind"] == "top").any() else None
    sentence = "Feature-map dropout results."
    if k is not None:
        def ap(kind: str) -> str:
            v = mean_ap[(mean_ap["kind"] == kind) & (mean_ap["k"].isin([0, k]))]["ap"]
            return _pct(float(v.iloc[0])) if len(v) else "–"
        sentence = (f"Dropping the top-{k} feature maps changes the mean AP over test sets from {ap('baseline')} to "
                    f"{ap('top')}, while {k} random ones give {ap('random')} and the low-{k} give {ap('low')}.")
    note = md.strip().split("\n\n")[-1]
    ci_body, ci_sentence = dropout_intervals(folder, study["data"]["train_set"])
    return {"id": "dropout", "title": "Sensitivity assessment (feature-map dropout)",
            "sentence": ci_sentence or sentence,
            "body": html_table(df, {c: "str" for c in df.columns}, study["data"]["train_set"])
            + "<p class='note'>" + html.escape(note) + "</p>" + ci_body, "figures": _figures(folder)}


def section_folder(out: Path, name: str, title: str, sentence: str, pattern: str = "*.png") -> dict | None:
    folder = out / name
    if not folder.is_dir():
        return None
    tables = ""
    for md in sorted(folder.glob("*.md"))[:3]:
        tables += f"<pre>{html.escape(md.read_text())}</pre>"
    return {"id": name.replace("/", "-"), "title": title, "sentence": sentence, "body": tables,
            "figures": _figures(folder, pattern)}


def section_color(out: Path, study: dict, folder_name: str = "color", title: str = "Colour ablation", *,
                  metrics_table: bool = True) -> dict | None:
    """Table I.1 layout (colour vs grayscale; left out with ``metrics_table=False`` where the caller shows it),
    median-probability drop, % colour-conditional T-FF."""
    folder = out / folder_name
    if not (folder / "table_color_gray.csv").is_file():
        return None
    det, train = study["detector"].get("paper_detector"), study["data"]["train_set"]
    body = ""
    if metrics_table and (folder / "color_metrics.csv").is_file():
        gray = sets_as_rows(pd.read_csv(folder / "color_metrics.csv"), set_column="set", versions=["version"],
                            metrics=TABLE_METRICS)
        body = ("<h3>Colour vs grayscale (Table I.1's numbers, one row per test set; AP and accuracies at p > 0.5, "
                "%)</h3>" + html_table(gray, {c: "1" for c in gray.columns[1:]}, train))
    if det and folder_name == "color":
        paper = paper_numbers("color", det)
        if len(paper):
            wide = sets_as_rows(paper.assign(row=paper["row"].replace({"baseline": "colour"})), set_column="gan",
                                versions=["row"], metrics=["AP", "real_acc", "fake_acc"])
            body += "<p>The paper's numbers for this detector:</p>" + html_table(
                wide, {c: "1" for c in wide.columns[1:]}, train)
    drops = pd.read_csv(folder / "median_probability.csv") if (folder / "median_probability.csv").is_file() \
        else pd.DataFrame()
    sentence = "Detection on grayscale versions of the test images."
    if len(drops):
        body += ("<h3>Median counterfeit probability (fakes with colour p ≥ 0.2)</h3>"
                 + html_table(drops, {"n": "int", "median_colour": "3", "median_grayscale": "3",
                                      "median_change_pp": "1", "median_change_pct": "1"}, train)
                 + "<p class='note'>Change of the median = grayscale median − colour median, in percentage points "
                 "(pp, as the paper's box plots and the figure) and relative to the colour median (%). One sign "
                 "convention everywhere: positive = grayscale raises p, negative = removing colour lowers p.</p>")
        pp, pct = drops["median_change_pp"], drops["median_change_pct"]
        sentence = (f"Removing colour {'lowers' if pp.mean() <= 0 else 'raises'} the median counterfeit probability "
                    f"of the fakes: change {pp.mean():+.1f} percentage points ({pct.mean():+.1f}% relative) on "
                    "average over sets (per set: " + ", ".join(
                        f"{mark(s, train)} {a:+.1f} pp ({b:+.1f}%)" for s, a, b in zip(drops["set"], pp, pct,
                                                                                     strict=True)) + ").")
    ci_body, ci_sentence, paired_body, paired_sentence = color_intervals(folder, train)
    body += ci_body
    sentence = ci_sentence or sentence
    cc = folder / "colour_conditional.csv"
    if cc.is_file():
        summary = pd.read_csv(cc)
        shown = summary[[c for c in ("set", "k", "count", "percent", "bh_count", "bh_percent") if c in summary]]
        body += ("<h3>Colour-conditional T-FF (Mood's median test, p ≤ 0.05; BH: Benjamini–Hochberg)</h3>"
                 + html_table(shown, {"percent": "1", "bh_percent": "1"}, train))
        if det and folder_name == "color":
            paper = paper_numbers("color_conditional", det)
            if len(paper):
                wide = wide_paper_table(paper, metric=None)
                body += "<p>The paper reports (% colour-conditional of the top-114):</p>" + html_table(
                    wide, {c: "1" for c in wide.columns[1:]}, train)
        site = summary["activation_site"].iloc[0] if "activation_site" in summary else "folded"
        where = "the raw conv output before batch norm" if site == "pre-bn" else "the BN-folded conv output"
        neg = f"; {int(summary['n_negative_gamma'].iloc[0])} of them have BN γ < 0" \
            if "n_negative_gamma" in summary else ""
        sentence += (f" {summary['percent'].mean():.1f}% of the top-{int(summary['k'].iloc[0])} T-FF respond "
                     "differently to colour and grayscale fakes on average (Mood's median test, p ≤ 0.05, on the max "
                     f"spatial activation of {where}{neg}).") + paired_sentence
        body += paired_body
    figures = _figures(folder, "median_probability*.png") + _figures(folder, "distributions_*.png")
    return {"id": folder_name.replace("/", "-"), "title": title, "sentence": sentence, "body": body,
            "figures": figures}


def section_color_robust(out: Path, study: dict) -> dict | None:
    """Universal vs colour-robust detector on colour and grayscale images, and their colour-conditional T-FF."""
    folder = out / "color_robust"
    if not (folder / "color" / "color_metrics.csv").is_file():
        return None
    labels = {out / "color": study["detector"]["label"], folder / "color": study["steps"]["color_robust"]["label"]}
    parts = [pd.read_csv(f / "color_metrics.csv").assign(detector=label)
             for f, label in labels.items() if (f / "color_metrics.csv").is_file()]
    tidy = pd.concat(parts, ignore_index=True)
    wide = sets_as_rows(tidy, set_column="set", versions=["detector", "version"], metrics=TABLE_METRICS)
    ap = tidy[tidy["metric"] == "ap"].groupby(["detector", "version"])["value"].mean()
    sentence = "; ".join(f"{d}: mean AP {ap[(d, 'colour')]:.1f}% on colour, {ap[(d, 'grayscale')]:.1f}% on grayscale"
                         for d in dict.fromkeys(tidy["detector"]) if (d, "grayscale") in ap.index) + "."
    color = section_color(out, study, "color_robust/color", "", metrics_table=False)
    body = ("<h3>AP and accuracies at p > 0.5 (%), colour vs grayscale</h3>"
            + html_table(wide, {c: "1" for c in wide.columns[1:]}, study["data"]["train_set"]))
    if color:
        body += "<h3>The colour-robust detector's own T-FF</h3>" + color["body"]
        sentence += " " + color["sentence"]
    return {"id": "cr", "title": "Colour-robust detector", "sentence": sentence, "body": body,
            "figures": color["figures"] if color else []}


def lrpmax_settings(out: Path) -> str:
    """One sentence on how the LRP-max maps were made (from lrpmax.json), or '' when it is missing."""
    path = out / "lrpmax" / "lrpmax.json"
    if not path.is_file():
        return ""
    s = read_json(path)
    if "neuron_seed" not in s:
        return ""
    site = "the raw conv output before batch norm" if s["activation_site"] == "pre-bn" else "the BN-folded conv output"
    seed = "1" if s["neuron_seed"] == "one" else "its activation"
    return (f" Images were ranked by the max spatial activation of {site} ({s['n_negative_gamma']} of the "
            f"{s['k']} T-FF have BN γ < 0); the argmax neuron was seeded with {seed}; zβ bounds: {s['bounds']}.")


def banner(out: Path, study: dict) -> str | None:
    """What a reader must know before any number: effects planted on purpose (a ``benchmark.json`` with
    ``artefacts`` beside the test data, as the embedded demo writes) and how many groups (photographs, prompts,
    classes) the intervals of each test set rest on (``evaluate/metrics_ci.csv``)."""
    parts = []
    test = Path(study["data"]["test"])
    bench = next((p / "benchmark.json" for p in (test.parent, test.parent.parent) if (p / "benchmark.json").is_file()),
                 None)
    artefacts = read_json(bench).get("artefacts") if bench else None
    if artefacts:
        planted = [f"a colour artefact of strength {artefacts['colour']} in every fake"] if artefacts.get("colour") \
            else []
        planted += ["each generator family's own upsampling trace"]
        if artefacts.get("format_shortcut"):
            planted.append(f"a format shortcut (reals JPEG at quality {artefacts.get('jpeg_quality')}, fakes PNG)")
        parts.append("Planted effects: the fakes of this benchmark carry " + ", ".join(planted) + ", put there on "
                     "purpose. The analyses below can show that tffkit finds them, not that real detectors behave "
                     "this way.")
    ci = out / "evaluate" / "metrics_ci.csv"
    groups = pd.read_csv(ci).query("metric == 'ap' and set != 'mean'")["groups"] if ci.is_file() else []
    if len(groups):
        low, high = int(groups.min()), int(groups.max())
        parts.append(f"Intervals are over groups of images (photographs, prompts or classes): "
                     f"{low if low == high else f'{low}–{high}'} per test set; with few groups an interval is wide, "
                     "and a claim whose interval includes 0 is written as not shown.")
    if (path := replicates_file(out)) is not None:
        rep = read_json(path)
        parts.append(f"Replicates: {len(rep['replicates'])} {rep['unit']}s; the first section says which headline "
                     f"claims hold in every one. {rep.get('note', '')}")
    return " ".join(parts) or None


def build_report(out: str | Path) -> Path:
    """Write ``OUT/report.html`` from a study folder; returns its path."""
    out = Path(out)
    study = read_json(out / "study.json")
    sections = [
        section_replicates(out), section_cards(out), section_detectors(out, study), section_data(out, study),
        section_transfer(out, study),
        section_robustness(out), section_ffrs(out, study), section_ranking_replicates(out),
        section_dropout(out, study),
        section_faithfulness(out, _figures, study["data"]["train_set"]),
        section_folder(out, "lrpmax", "What the T-FF detect (LRP-max)",
                       "Each row is a top T-FF; each column a test set; patches are the image regions whose "
                       "positive LRP-max relevance is in the top quartile." + lrpmax_settings(out), "collage*.png"),
        section_color(out, study, "color", "Colour ablation and colour-conditional T-FF"),
        section_color_robust(out, study),
        section_planted(out, study["data"]["train_set"]),
        section_generator(out, _figures, study["data"]["train_set"]),
    ]
    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
    page = env.from_string(TEMPLATE.read_text()).render(
        title=f"tffkit study — {study.get('name', 'study')}", sections=[s for s in sections if s],
        banner=banner(out, study),
        config=html.escape(yaml.safe_dump(study, sort_keys=False, allow_unicode=True)),
        train=", ".join(study["data"]["train_set"]))
    return atomic_write(out / "report.html", lambda tmp: Path(tmp).write_text(page))
