"""Words and text tables for people, from result tables: a change with its interval in words (a direction only where
the interval excludes 0, "not shown" otherwise), the dropout effects as sentences, the paper's dropout table layout.
Imported by the analyses (printed summaries, ``dropout_table.md``), the report and the command line; imports nothing
from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: a set with at most this many groups gets a per-group breakdown (docs/algorithms.md §10)
FEW_GROUPS = 20


def side(low: float, high: float) -> int:
    """+1 when an interval lies above 0, −1 below, 0 when it includes 0 or is undefined."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return 0
    return 1 if low > 0 else (-1 if high < 0 else 0)


def change_words(estimate: float, low: float, high: float, *, what: str = "it", scale: float = 100.0,
                 unit: str = "pp", down: str = "lowers", up: str = "raises") -> str:
    """A change of ``what`` with its interval in words: a direction only when the interval excludes 0, else "not
    shown" (``lowers AP by 3.2 pp [1.1, 5.0]``; ``changes AP by +0.4 pp [−1.0, +1.9]: a change not shown …``)."""
    if not all(np.isfinite([estimate, low, high])):
        return f"changes {what} by {scale * estimate:+.1f} {unit} (interval undefined)"
    if side(low, high) > 0:
        return f"{up} {what} by {scale * estimate:.1f} {unit} [{scale * low:.1f}, {scale * high:.1f}]"
    if side(low, high) < 0:
        return f"{down} {what} by {-scale * estimate:.1f} {unit} [{-scale * high:.1f}, {-scale * low:.1f}]"
    return (f"changes {what} by {scale * estimate:+.1f} {unit} [{scale * low:+.1f}, {scale * high:+.1f}]: a change "
            "not shown (the interval includes 0)")


def direction(est: float, low: float, high: float, unit: str = "pp") -> str:
    """A difference as words: 'higher by 3.1 [1.2, 5.0] pp', or 'not shown (… [−1.0, 4.0] …)' where the interval
    includes zero — never a direction then."""
    text = f"{est:+.1f} [{low:+.1f}, {high:+.1f}] {unit}"
    return {1: "higher", -1: "lower", 0: "not shown"}[side(low, high)] + f" ({text})"


def effects_lines(effects: pd.DataFrame, curves: Sequence[dict], where: str = "mean", what: str = "AP") -> list[str]:
    """One sentence per k (AP averaged over sets by default): top-k and low-k changes with their intervals (a
    direction only when the interval excludes 0) and top-k's percentile among the random-k replicas; then the
    curves that are not monotone or where dropping top units raises AP."""
    lines = []
    part = effects[(effects["set"] == where) & (effects["metric"] == "ap")]
    for k, rows in part.groupby("k", sort=True):
        by = {r.kind: r for r in rows.itertuples()}
        text = (f"k = {k}: dropping the top-{k} units "
                f"{change_words(by['top'].delta, by['top'].low, by['top'].high, what=what)}")
        if by["top"].null_replicas:
            text += (f", at percentile {by['top'].null_percentile:.0f} of {by['top'].null_replicas} random-{k} "
                     f"draws (their ΔAP: {100 * by['top'].null_low:+.1f} to {100 * by['top'].null_high:+.1f} pp)")
        if "low" in by:
            text += f"; the low-{k} {change_words(by['low'].delta, by['low'].low, by['low'].high, what=what)}"
        lines.append(text + ".")
    def where(c: dict, key: str) -> str:
        return f"{'the mean over sets' if c['set'] == 'mean' else c['set']} (k = {', '.join(map(str, c[key]))})"

    raised = [where(c, "raises_ap") for c in curves if c["raises_ap"]]
    if raised:
        lines.append("Finding: dropping the top-k units raises AP (interval above 0) on " + "; ".join(raised)
                     + " — ω counts positive relevance only.")
    rising = [where(c, "rises_at") for c in curves if not c["monotone"]]
    if rising:
        lines.append("Not monotone: the top-k AP rises from the previous k (baseline at k = 0) on " + "; ".join(rising)
                     + ".")
    return lines


def _cell(row: pd.Series, metric: str) -> str:
    value = f"{100 * row[metric]:.1f}"
    if row["kind"] == "random" and row["replicas"] > 1:
        value += f" ± {100 * row[metric + '_std']:.1f}"
    return value


def paper_layout(summary: pd.DataFrame, fmt: str = "markdown", paper: pd.DataFrame | None = None,
                 calibrated: bool = True) -> str:
    """Rows = variants, columns = set × {AP, Real, GAN} (accuracies at the test-calibrated threshold)."""
    real, fake = ("cal_real_acc", "cal_fake_acc") if calibrated else ("real_acc", "fake_acc")
    sets = list(dict.fromkeys(summary["set"]))
    header = ["variant"] + [f"{s} {m}" for s in sets for m in ("AP", "Real", "GAN")]
    lines = []
    for variant, part in summary.groupby("variant", sort=False):
        by_set = {r["set"]: r for _, r in part.iterrows()}
        cells = [variant]
        for s in sets:
            r = by_set.get(s)
            cells += [_cell(r, m) if r is not None else "–" for m in ("ap", real, fake)]
        lines.append(cells)
        if paper is not None and not paper[paper["row"] == variant].empty:
            pv = paper[paper["row"] == variant].set_index(["gan", "metric"])["value"]
            lines.append([f"{variant} (paper)"] + [
                f"{pv.get((s, m), float('nan')):.1f}" if (s, m) in pv.index else "–"
                for s in sets for m in ("AP", "real_acc", "fake_acc")])
    note = ("AP and accuracies in %; Real/GAN accuracy at a threshold calibrated on each test set for the "
            "undropped model (test-calibrated; the training set stays at 0.5)" if calibrated
            else "AP and accuracies in %, threshold 0.5")
    ties = [n for n in dict.fromkeys(summary["note"].fillna("")) if n] if "note" in summary.columns else []
    if ties:
        note += ". Ties in the ranking: " + "; ".join(ties)
    if fmt == "markdown":
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in lines]
        return "\n".join(out) + f"\n\n{note}.\n"
    if fmt == "latex":
        out = [f"% {note}", "\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\hline",
               " & ".join(h.replace("_", "\\_") for h in header) + " \\\\", "\\hline"]
        out += [" & ".join(c.replace("±", "$\\pm$").replace("_", "\\_") for c in row) + " \\\\" for row in lines]
        return "\n".join(out + ["\\hline", "\\end{tabular}"]) + "\n"
    raise ValueError(f"unknown table format {fmt!r}")
