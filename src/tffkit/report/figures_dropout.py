"""Figures of dropping units (docs/algorithms.md §4 and §8): AP against k (``tff dropout``) and the deletion curves
of the rankings (``tff faithfulness``).

Pure functions of the tables the jobs write; matplotlib with Agg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..results import save_figure  # noqa: E402
from .figures_tff import readable_pt  # noqa: E402

KIND_COLORS = {"top": "tab:red", "random": "tab:blue", "low": "tab:green"}
RANKING_COLORS = {"ffrs": "tab:red", "lrp-epsilon": "tab:purple", "activation": "tab:green", "taylor": "tab:orange",
                  "random": "tab:blue"}


def plot_ap_vs_k(summary: pd.DataFrame, path: Path) -> None:
    """AP against k per set, one line per kind (top, random ± std, low), baseline dashed (text readable at the
    report's width); ``summary`` as dropout_summary.csv."""
    sets = list(dict.fromkeys(summary["set"]))
    cols = min(4, len(sets))
    rows = int(np.ceil(len(sets) / cols))
    fs = readable_pt(3.2 * cols)
    with plt.rc_context({"font.size": fs}):
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows + 0.6), squeeze=False, sharey=True)
        for ax, s in zip(axes.flat, sets, strict=False):
            part = summary[summary["set"] == s]
            base = part[part["kind"] == "baseline"]["ap"]
            if len(base):
                ax.axhline(100 * base.iloc[0], color="gray", linestyle="--", label="baseline")
            for kind, color in KIND_COLORS.items():
                sub = part[part["kind"] == kind].sort_values("k")
                if len(sub):
                    ax.errorbar(sub["k"], 100 * sub["ap"], yerr=100 * sub["ap_std"], marker="o", color=color,
                                label=f"{kind}-k", capsize=3)
            ax.set_title(s)
            ax.set_xlabel("k (maps dropped)")
            ax.locator_params(axis="x", nbins=4)
        for ax in axes[:, 0]:
            ax.set_ylabel("AP (%)")
        for ax in list(axes.flat)[len(sets):]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.suptitle("Sensitivity assessment: AP after dropping k feature maps")
        fig.tight_layout()
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 0.0), frameon=False)
        save_figure(fig, path)


def plot_curves(curves: pd.DataFrame, path: Path, labels: Mapping[str, str] | None = None,
                metrics: Sequence[str] = ("ap", "fake_acc")) -> None:
    """Deletion curves: one panel per test set and metric, the metric (%) against the units dropped (log scale),
    one line per ranking (random: mean ± std band), the undropped model dashed; ``curves`` as faithfulness.csv,
    ``labels``: ranking → legend text."""
    labels = labels or {}
    sets = list(dict.fromkeys(curves["set"]))
    names = {"ap": "AP (%)", "fake_acc": "fake accuracy, p > 0.5 (%)"}
    width = min(16.0, 3.4 * len(sets))
    with plt.rc_context({"font.size": readable_pt(width)}):
        fig, axes = plt.subplots(len(metrics), len(sets), figsize=(width, 3.0 * len(metrics) + 0.8), squeeze=False,
                                 sharex=True)
        for j, s in enumerate(sets):
            part = curves[curves["set"] == s]
            for i, m in enumerate(metrics):
                ax = axes[i, j]
                ax.axhline(100 * part[part["ranking"] == "baseline"][m].iloc[0], color="gray", linestyle="--",
                           label="no unit dropped")
                for name, color in RANKING_COLORS.items():
                    sub = part[part["ranking"] == name].groupby("k")[m]
                    if not len(sub):
                        continue
                    mean, std = 100 * sub.mean(), 100 * sub.std(ddof=0).fillna(0.0)
                    ax.plot(mean.index, mean.values, marker="o", markersize=3, color=color,
                            label=labels.get(name, name))
                    if name == "random":
                        ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.2)
                ax.set_xscale("log", base=2)
                ax.set_title(s if i == 0 else "")
                if i == len(metrics) - 1:
                    ax.set_xlabel("units dropped (top-k)")
                if j == 0:
                    ax.set_ylabel(names.get(m, m))
        handles, legend = axes[0, 0].get_legend_handles_labels()
        fig.suptitle("Deletion curves: detection as each ranking's top units are dropped")
        fig.tight_layout()
        fig.legend(handles, legend, loc="upper center", ncol=min(6, len(legend)), bbox_to_anchor=(0.5, 0.0),
                   frameon=False)
        save_figure(fig, path)
