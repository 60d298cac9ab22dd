import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, average_precision_score, roc_curve

from tffkit.metrics import binary_metrics, calibrated_threshold, metrics_table


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    m = binary_metrics(labels, probs)
    assert np.isclose(m["ap"], average_precision_score(labels, probs))
    assert np.isclose(m["acc"], accuracy_score(labels, probs > 0.5))
    assert np.isclose(m["real_acc"], accuracy_score(labels[labels == 0], probs[labels == 0] > 0.5))
    assert np.isclose(m["fake_acc"], accuracy_score(labels[labels == 1], probs[labels == 1] > 0.5))
    fpr, tpr, thr = roc_curve(labels, probs)
    best = thr[np.argmax(np.sqrt(tpr * (1 - fpr)))]
    assert np.isclose(m["cal_threshold"], best)
    assert m["cal_acc"] >= m["acc"] - 0.1


def test_calibration_separable():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([0.01, 0.02, 0.03, 0.2, 0.3, 0.4])
    thr = calibrated_threshold(labels, probs)
    m = binary_metrics(labels, probs)
    assert 0.03 < thr <= 0.2 and m["cal_real_acc"] == 1 and m["cal_fake_acc"] == 1 and m["fake_acc"] == 0


def test_metrics_table_rows():
    df = pd.DataFrame({"set": ["a"] * 4 + ["b"] * 4, "class": ["x", "x", "y", "y", "", "", "", ""],
                       "label": [0, 1, 0, 1, 0, 1, 0, 1], "prob": [0.1, 0.9, 0.2, 0.4, 0.6, 0.7, 0.3, 0.2]})
    t = metrics_table(df)
    assert list(zip(t["set"], t["class"], strict=True)) == [("a", "x"), ("a", "y"), ("a", "all"), ("b", "all"),
                                                            ("mean", "all")]
    a = t[(t["set"] == "a") & (t["class"] == "all")].iloc[0]
    assert a["n_real"] == 2 and a["n_fake"] == 2 and np.isclose(a["acc"], 0.75)
    assert np.isclose(t.iloc[-1]["acc"], (0.75 + 0.5) / 2)  # b: 0.6→fake ✗, 0.7 ✓, 0.3 ✓, 0.2 ✗
