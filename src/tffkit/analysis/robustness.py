"""Robustness to perturbations (docs/algorithms.md §10): how AP and the real and fake accuracies at 0.5 move when the
test images are JPEG-compressed, resized, blurred or made gray, and the real/fake asymmetry of that move (DEAR's
finding: fakes' accuracy collapses while reals' rises).

The test images are scored once clean and once per perturbation (:class:`tffkit.data.Perturbation`, the code of
``tff evaluate --jpeg/--resize/--blur/--grayscale``). Every change (perturbed − clean) gets a *paired* 95% interval
over groups: one cluster bootstrap (strata (set, label)) draws the resamples, and each resample's metric is computed
on the same images clean and perturbed, so an image whose score does not move adds nothing to the interval.
:func:`paired_changes` and :func:`asymmetry` are pure (tables in, tables out); the study step that scores the images and
writes the tables is :func:`tffkit.jobs.robustness.robustness`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..wording import change_words, side
from .intervals import SEED, detection_metrics
from .uncertainty import RESAMPLES, ClusterResampler

METRICS = ("ap", "real_acc", "fake_acc")
_COLUMNS = [0, 2, 3]  # their positions in detection_metrics' (ap, acc, real_acc, fake_acc)
CLEAN = "none"


def perturbations_of(*, jpeg: Sequence[int] = (), resize: Sequence[float] = (), blur: Sequence[float] = (),
                     grayscale: bool = False) -> dict:
    """name → :class:`tffkit.data.Perturbation`, one perturbation per value (``jpeg75``, ``resize0.5``, ``blur1``,
    ``gray``), in that order."""
    from ..data import Perturbation

    found = [Perturbation(jpeg=int(q)) for q in jpeg] + [Perturbation(resize=float(f)) for f in resize]
    found += [Perturbation(blur=float(s)) for s in blur] + ([Perturbation(grayscale=True)] if grayscale else [])
    return {p.describe(): p for p in found}


def paired_table(clean: pd.DataFrame, perturbed: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The images scored clean and under every perturbation, one row each: ``path, set, label, group, none`` (the
    clean p) and one p column per perturbation, matched by (set, path); an image missing from any table is left
    out."""
    keep = clean[["path", "set", "label"] + (["group"] if "group" in clean else [])].copy()
    if "group" not in keep:
        keep["group"] = keep["path"]
    table = keep.assign(**{CLEAN: clean["prob"].to_numpy(float)})
    for name, scores in perturbed.items():
        table = table.merge(scores[["set", "path", "prob"]].rename(columns={"prob": name}), on=["set", "path"],
                            how="inner")
    return table.reset_index(drop=True)


def paired_changes(table: pd.DataFrame, perturbations: Sequence[str], *, resamples: int = RESAMPLES,
                   seed: int = SEED) -> pd.DataFrame:
    """Per set (and the mean over sets), perturbation and metric (AP, real and fake accuracy at p > 0.5): the clean
    and perturbed value and the change with its paired 95% interval over groups. ``table``: a :func:`paired_table`
    (one p column per name in ``perturbations`` beside the clean ``none``)."""
    names = sorted(dict.fromkeys(table["set"].astype(str)))
    code = table["set"].astype(str).map({s: i for i, s in enumerate(names)}).to_numpy(int)
    labels = table["label"].to_numpy(int)
    probs = table[[CLEAN, *perturbations]].to_numpy(float)
    groups = table["group"].astype(str).to_numpy()
    strata = [f"{s}/{y}" for s, y in zip(table["set"], labels, strict=True)]

    def values(idx: np.ndarray) -> np.ndarray:
        """(version, set + mean, metric): the metrics of each version of the same resampled images."""
        out = np.full((probs.shape[1], len(names) + 1, len(METRICS)), np.nan)
        for i in range(len(names)):
            sel = idx[code[idx] == i]
            for v in range(probs.shape[1]):
                out[v, i] = np.asarray(detection_metrics(labels[sel], probs[sel, v]))[_COLUMNS]
        with np.errstate(all="ignore"):
            out[:, -1] = [[np.nanmean(c) if np.isfinite(c).any() else np.nan for c in v[:-1].T] for v in out]
        return out

    def changes(idx: np.ndarray) -> np.ndarray:
        v = values(idx)
        return (v[1:] - v[:1]).ravel()

    sampler = ClusterResampler(groups, strata=strata, resamples=resamples, seed=seed)
    found = sampler.intervals(changes)
    level = values(np.arange(len(table)))
    rows = []
    for p, name in enumerate(perturbations):
        for i, set_name in enumerate([*names, "mean"]):
            part = code == i if set_name != "mean" else np.ones(len(code), dtype=bool)
            for j, metric in enumerate(METRICS):
                iv = found[(p * (len(names) + 1) + i) * len(METRICS) + j]
                rows.append({"set": set_name, "perturbation": name, "metric": metric, "clean": level[0, i, j],
                             "perturbed": level[p + 1, i, j], "change": iv.estimate, "low": iv.low,
                             "high": iv.high, "images": int(part.sum()),
                             "groups": len(set(zip(groups[part], code[part], strict=True))),
                             "resamples": resamples, "seed": seed})
    return pd.DataFrame(rows)


def asymmetry_verdict(real: Mapping[str, float], fake: Mapping[str, float]) -> tuple[bool, str]:
    """(shown, sentence): DEAR's asymmetry is shown only when the fake-accuracy change's interval lies below 0 and
    the real-accuracy change's above 0; otherwise the sentence says what is shown and what is not. ``real`` and
    ``fake``: ``change, low, high`` (fractions)."""
    r, f = (side(d["low"], d["high"]) for d in (real, fake))
    fake_words = change_words(fake["change"], fake["low"], fake["high"], what="fakes' accuracy", down="lowers",
                              up="raises")
    real_words = change_words(real["change"], real["low"], real["high"], what="reals' accuracy", down="lowers",
                              up="raises")
    if not all(np.isfinite([real["change"], fake["change"]])):
        return False, "Not measured: the test images lack reals or fakes."
    if f < 0 < r:
        return True, (f"Fakes' accuracy falls while reals' rises (both 95% intervals exclude 0): it {fake_words} "
                      f"and {real_words}.")
    return False, (f"Not shown that fakes' accuracy falls while reals' rises: it {fake_words}; it {real_words}.")


def asymmetry(changes: pd.DataFrame, *, set_name: str = "mean") -> list[dict]:
    """Per perturbation, on ``set_name`` (default the mean over sets): Δ real and Δ fake accuracy with their
    intervals, whether DEAR's asymmetry is shown, and the verdict sentence (:func:`asymmetry_verdict`)."""
    out = []
    part = changes[changes["set"] == set_name]
    for name, rows in part.groupby("perturbation", sort=False):
        by = {r["metric"]: {k: float(r[k]) for k in ("change", "low", "high")} for _, r in rows.iterrows()}
        shown, sentence = asymmetry_verdict(by["real_acc"], by["fake_acc"])
        out.append({"perturbation": name, "set": set_name, "delta_real_acc": by["real_acc"],
                    "delta_fake_acc": by["fake_acc"], "shown": shown, "verdict": sentence})
    return out
