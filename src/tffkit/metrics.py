"""Detection metrics (fake = positive class): AP, accuracies, test-calibrated threshold, tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_curve

METRIC_COLUMNS = ["ap", "acc", "real_acc", "fake_acc"]
CALIBRATED_COLUMNS = ["cal_threshold", "cal_acc", "cal_real_acc", "cal_fake_acc"]


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
    """Threshold maximising sqrt(TPR·(1 − FPR)) on these scores (test-calibrated, SPEC §4)."""
    labels = np.asarray(labels).astype(int)
    if labels.min(initial=1) == labels.max(initial=0):
        return 0.5
    fpr, tpr, thr = roc_curve(labels, probs)
    score = np.sqrt(tpr * (1.0 - fpr))
    best = int(np.argmax(score))
    return float(min(thr[best], 1.0))


def binary_metrics(labels: np.ndarray, probs: np.ndarray, calibrate: bool = True,
                   threshold: float | None = None) -> dict[str, float]:
    """n_real, n_fake, AP and accuracies at 0.5, plus test-calibrated ones (or at ``threshold``)."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    row: dict[str, float] = {"n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum()),
                             "ap": average_precision(labels, probs)}
    row.update(accuracies(labels, probs, 0.5))
    if calibrate or threshold is not None:
        thr = calibrated_threshold(labels, probs) if threshold is None else float(threshold)
        cal = accuracies(labels, probs, thr, inclusive=True)
        row.update({"cal_threshold": thr, "cal_acc": cal["acc"], "cal_real_acc": cal["real_acc"],
                    "cal_fake_acc": cal["fake_acc"]})
    return row


def metrics_table(scores: pd.DataFrame, calibrate: bool = True,
                  thresholds: dict[str, float] | None = None) -> pd.DataFrame:
    """Per (set, class), per set (class ``all``) and a ``mean`` row over sets.

    ``scores`` needs columns ``set, class, label, prob``. ``thresholds`` fixes the calibrated
    threshold per set (e.g. those of an undropped model); by default each set calibrates itself.
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
                             **binary_metrics(sub["label"], sub["prob"], calibrate, thr)})
        rows.append({"set": set_name, "class": "all",
                     **binary_metrics(part["label"], part["prob"], calibrate, thr)})
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


def format_table(table: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A plain-text table with metrics in percent, for the terminal."""
    cols = list(columns or [c for c in table.columns])
    shown = table[cols].copy()
    for c in cols:
        if c in METRIC_COLUMNS or c in CALIBRATED_COLUMNS[1:]:
            shown[c] = (shown[c].astype(float) * 100).round(1)
        elif c == "cal_threshold":
            shown[c] = shown[c].astype(float).round(3)
    return shown.to_string(index=False)
