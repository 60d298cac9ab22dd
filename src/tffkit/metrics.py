"""Detection metrics (fake = positive class): probabilities, AP, accuracies, test-calibrated threshold, tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_curve

METRIC_COLUMNS = ["ap", "acc", "real_acc", "fake_acc"]
CALIBRATED_COLUMNS = ["cal_threshold", "cal_acc", "cal_real_acc", "cal_fake_acc"]
PROB_DTYPES = ("float64", "float32")
CAL_COMPARES = ("ge", "gt")


def probabilities(logits: np.ndarray, dtype: str = "float64") -> np.ndarray:
    """p(fake) = sigmoid(logit) as float64 values: computed in float64, or (``float32``, the public code) as
    torch's float32 sigmoid of the float32 logit, which is exactly 1.0 above logit ≈ 16.6."""
    logits = np.asarray(logits)
    if dtype == "float64":
        with np.errstate(over="ignore"):  # exp overflows to inf for logit < −709: p = 0, as it should
            return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    if dtype == "float32":
        return torch.sigmoid(torch.from_numpy(logits.astype(np.float32))).numpy().astype(np.float64)
    raise ValueError(f"unknown probability dtype {dtype!r}; use one of {PROB_DTYPES}")


def tie_counts(probs: np.ndarray) -> dict[str, int]:
    """``n_saturated``: scores exactly 0 or 1; ``n_tied``: scores equal to at least one other score."""
    probs = np.asarray(probs, dtype=np.float64)
    _, inverse, counts = np.unique(probs, return_inverse=True, return_counts=True)
    return {"n_saturated": int(((probs == 0) | (probs == 1)).sum()), "n_tied": int((counts[inverse] > 1).sum())}


def accuracies(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5,
               inclusive: bool = False) -> dict[str, float]:
    """Overall, real and fake accuracy when p > threshold (p ≥ threshold if ``inclusive``) means fake."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    pred = (probs >= threshold) if inclusive else (probs > threshold)
    real, fake = labels == 0, labels == 1
    nan = float("nan")
    return {
        "acc": float((pred == labels).mean()) if len(labels) else nan,
        "real_acc": float((~pred[real]).mean()) if real.any() else nan,
        "fake_acc": float(pred[fake].mean()) if fake.any() else nan,
    }


def average_precision(labels: np.ndarray, probs: np.ndarray) -> float:
    """sklearn's average precision with fake as positive; NaN unless both classes are present."""
    labels = np.asarray(labels).astype(int)
    if labels.min(initial=1) == labels.max(initial=0) or len(labels) == 0:
        return float("nan")
    return float(average_precision_score(labels, probs))


def calibrated_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """Threshold maximising sqrt(TPR·(1 − FPR)) on these scores (test-calibrated, docs/algorithms.md §4)."""
    labels = np.asarray(labels).astype(int)
    if labels.min(initial=1) == labels.max(initial=0):
        return 0.5
    fpr, tpr, thr = roc_curve(labels, probs)
    score = np.sqrt(tpr * (1.0 - fpr))
    best = int(np.argmax(score))
    return float(min(thr[best], 1.0))


def binary_metrics(labels: np.ndarray, probs: np.ndarray, calibrate: bool = True,
                   threshold: float | None = None, cal_compare: str = "ge") -> dict[str, float]:
    """n_real, n_fake, saturated/tied scores, AP and accuracies at 0.5 (p > 0.5 is fake), plus test-calibrated
    ones (or at ``threshold``) where p ≥ t (``ge``) or p > t (``gt``, the public code) is fake."""
    if cal_compare not in CAL_COMPARES:
        raise ValueError(f"unknown cal_compare {cal_compare!r}; use one of {CAL_COMPARES}")
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    row: dict[str, float] = {"n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum()),
                             **tie_counts(probs), "ap": average_precision(labels, probs)}
    row.update(accuracies(labels, probs, 0.5))
    if calibrate or threshold is not None:
        thr = calibrated_threshold(labels, probs) if threshold is None else float(threshold)
        cal = accuracies(labels, probs, thr, inclusive=cal_compare == "ge")
        row.update({"cal_threshold": thr, "cal_acc": cal["acc"], "cal_real_acc": cal["real_acc"],
                    "cal_fake_acc": cal["fake_acc"]})
    return row


def metrics_table(scores: pd.DataFrame, calibrate: bool = True, thresholds: dict[str, float] | None = None,
                  cal_compare: str = "ge") -> pd.DataFrame:
    """Per (set, class), per set (class ``all``) and a ``mean`` row over sets.

    ``scores`` needs columns ``set, class, label, prob``. ``thresholds`` fixes the calibrated
    threshold per set (e.g. those of an undropped model); by default each set calibrates itself.
    ``cal_compare``: ``ge`` (p ≥ t is fake) or ``gt`` (p > t) at the calibrated threshold.
    """
    rows = []
    thresholds = thresholds or {}
    for set_name, part in scores.groupby("set", sort=True):
        thr = thresholds.get(set_name)
        classes = sorted(c for c in part["class"].fillna("").unique() if c)
        if len(classes) > 1:
            for cls in classes:
                sub = part[part["class"] == cls]
                rows.append({"set": set_name, "class": cls,
                             **binary_metrics(sub["label"], sub["prob"], calibrate, thr, cal_compare)})
        rows.append({"set": set_name, "class": "all",
                     **binary_metrics(part["label"], part["prob"], calibrate, thr, cal_compare)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    set_rows = table[table["class"] == "all"]
    mean = {"set": "mean", "class": "all"}
    for col in table.columns:
        if col in ("set", "class"):
            continue
        vals = set_rows[col].astype(float)
        mean[col] = int(vals.sum()) if col.startswith("n_") else float(np.nanmean(vals)) if vals.notna().any() \
            else math.nan
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


def undefined_ap_note(table: pd.DataFrame) -> str | None:
    """The sentence naming the sets whose AP is undefined (one label only), or None."""
    if table.empty or "ap" not in table:
        return None
    rows = table[(table["class"] == "all") & (table["set"] != "mean") & table["ap"].isna()]
    parts = [f"{r.set} (only {'fake' if r.n_real == 0 else 'real'} images)" for r in rows.itertuples()]
    if not parts:
        return None
    return ("AP is undefined for " + ", ".join(parts) + ": it needs real and fake images (shown as 'undef'; the mean "
            "row averages the other sets)")


def format_table(table: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A plain-text table with metrics in percent for the terminal; an undefined metric shows as 'undef'."""
    cols = list(columns or [c for c in table.columns])
    shown = table[cols].copy()
    for c in cols:
        if c in METRIC_COLUMNS or c in CALIBRATED_COLUMNS[1:]:
            values = (shown[c].astype(float) * 100).round(1)
            shown[c] = [("undef" if np.isnan(v) else v) for v in values] if values.isna().any() else values
        elif c == "cal_threshold":
            shown[c] = shown[c].astype(float).round(3)
    return shown.to_string(index=False)
