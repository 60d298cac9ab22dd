"""Tables for the report: headers in words, one precision per column, the training family marked (†), empty
columns dropped, wide tables scrolling inside the page."""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

TRAINING_MARK = "†"

# column identifiers → words (units in brackets)
HEADERS = {
    "set": "test set", "class": "class", "variant": "variant", "version": "images", "detector": "detector",
    "n_real": "real images", "n_fake": "fake images", "n": "fakes (colour p ≥ 0.2)",
    "n_saturated": "saturated scores", "n_tied": "tied scores",
    "ap": "AP (%)", "acc": "accuracy (%)", "real_acc": "real acc. (%)", "fake_acc": "fake acc. (%)",
    "cal_threshold": "calibrated t", "cal_real_acc": "real acc., calibrated t (%)",
    "cal_fake_acc": "fake acc., calibrated t (%)",
    "rank": "rank", "key": "feature map", "omega": "ω", "unit": "unit kind", "row": "row",
    "median_colour": "median p, colour", "median_grayscale": "median p, grayscale",
    "median_change_pp": "change of the median (pp)", "median_change_pct": "change of the median (% of colour)",
    "k": "T-FF tested", "count": "colour-conditional", "percent": "colour-conditional (%)",
    "bh_count": "colour-conditional after BH", "bh_percent": "colour-conditional after BH (%)",
    "epoch": "epoch", "lr": "learning rate", "train_loss": "training loss", "val_loss": "validation loss",
    "val_acc": "validation accuracy (%)", "val_ap": "validation AP (%)",
}
# the metric part of a "<set> <metric>" column (wide layouts)
METRICS = {"ap": "AP", "AP": "AP", "real": "real acc.", "fake": "fake acc.", "real_acc": "real acc.",
           "fake_acc": "fake acc.", "Real": "real acc.", "GAN": "fake acc.", "acc": "accuracy"}


def mark(name: str, train: Iterable[str]) -> str:
    """A set's name, with † when it is the detector's training family."""
    return f"{name}{TRAINING_MARK}" if name in set(train) else name


def header(column: str, train: Iterable[str] = ()) -> str:
    """The words shown for a column: known identifiers translated, '<set> <metric>' with the set marked."""
    if column in HEADERS:
        return HEADERS[column]
    if column in set(train):
        return mark(column, train)
    head, _, metric = column.rpartition(" ")
    if head and metric in METRICS:
        return f"{mark(head, train)} {METRICS[metric]}"
    return column.replace("_", " ")


def _empty(values: pd.Series) -> bool:
    return all(v is None or (isinstance(v, float) and pd.isna(v)) or str(v).strip() in ("", "–", "nan")
               for v in values)


def _cell(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if fmt == "str" or isinstance(value, str):
        return str(value)
    if fmt == "int":
        return f"{int(value):,}"
    if fmt == "pct":  # a fraction shown in %
        return f"{100 * float(value):.1f}"
    if fmt.startswith("sci"):
        return f"{float(value):.{int(fmt[3:])}e}"
    return f"{float(value):.{int(fmt)}f}"


def default_format(values: pd.Series) -> str:
    """int for integer columns, str for text, else one decimal (percent values)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_object_dtype(values):
        return "str"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    return "1"


def html_table(df: pd.DataFrame, formats: Mapping[str, str] | None = None, train: Iterable[str] = (),
               set_columns: Iterable[str] = ("set",)) -> str:
    """``df`` as an HTML table inside a scrolling box: headers in words, each column in one format (``pct``,
    ``int``, ``str``, a number of decimals or ``sciN``), training-family sets marked, empty columns dropped."""
    formats = dict(formats or {})
    train = list(train)
    shown = [c for c in df.columns if not _empty(df[c])]
    head = "".join(f"<th>{html.escape(header(str(c), train))}</th>" for c in shown)
    rows = []
    for _, row in df[shown].iterrows():
        cells = []
        for i, c in enumerate(shown):
            text = _cell(row[c], formats.get(c) or default_format(df[c]))
            if c in set_columns:
                text = mark(text, train)
            align = " class='l'" if i == 0 or c in set_columns else ""  # labels left, numbers right
            cells.append(f"<td{align}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table class='tbl'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            "</tbody></table></div>")


def key_value_table(rows: Iterable[tuple[str, object]]) -> str:
    """A two-column table of labelled values (already formatted)."""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td class='l'>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<div class='scroll'><table class='tbl kv'>{body}</table></div>"


def sets_as_rows(tidy: pd.DataFrame, *, set_column: str, versions: Sequence[str], metrics: Sequence[str],
                 value: str = "value", metric: str = "metric") -> pd.DataFrame:
    """A tidy table (one value per set, version(s) and metric) with one row per set and a column per
    (version…, metric) in the given metric order — as narrow as the page for any number of sets."""
    t = tidy[tidy[metric].isin(metrics)]
    wide = t.pivot_table(index=set_column, columns=[*versions, metric], values=value, sort=False)
    keys = list(dict.fromkeys(tuple(r) for r in t[list(versions)].itertuples(index=False)))
    order = [(*k, m) for k in keys for m in metrics if (*k, m) in wide.columns]
    wide = wide[order]
    wide.columns = [" ".join(str(x) for x in c) for c in order]
    return wide.rename_axis("set").reset_index()


def wide_paper_table(paper: pd.DataFrame, columns: str = "gan", metric: str | None = "metric") -> pd.DataFrame:
    """The paper's long-form numbers as one row per paper row and a '<set> <metric>' column each."""
    column = paper[columns] + (" " + paper[metric] if metric else "")
    wide = paper.assign(column=column).pivot(index="row", columns="column", values="value")
    wide.columns.name = None
    return wide.reset_index()


def relative(path: str | os.PathLike | None, out: str | os.PathLike) -> str | None:
    """A path as the report shows it: an absolute one relative to the study folder ``out``, so the report reads the
    same on any machine that holds the study beside its data; a relative one as it was recorded."""
    if path is None or not os.path.isabs(path):
        return None if path is None else os.fspath(path)
    return os.path.relpath(path, Path(out).absolute())
