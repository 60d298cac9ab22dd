"""The report's replicate section, drawn from ``OUT/replicates.json`` when a study was repeated (training seeds,
resampled sources): each headline claim's verdict per replicate and over them, and each headline statistic per
replicate with its interval and over replicates (median and range). A claim holds only when every replicate shows it.

``replicates.json``: ``{"replicates": [labels], "unit": str, "note": str, "claims": [{"claim", "holds",
"per_replicate": {label: verdict}}], "columns": [str], "rows": [[cell, …]]}`` (cells already formatted)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ..results import read_json
from .tables import html_table


def section_replicates(out: Path) -> dict | None:
    path = out / "replicates.json"
    if not path.is_file():
        return None
    rep = read_json(path)
    labels = rep["replicates"]
    claims = pd.DataFrame([{"claim": c["claim"], "holds (over replicates)": c["holds"],
                            **{label: c["per_replicate"].get(label, "–") for label in labels}}
                           for c in rep["claims"]])
    held = sum(c["holds"] == "yes" for c in rep["claims"])
    sentence = (f"{len(labels)} replicates ({rep['unit']}s). {held} of {len(rep['claims'])} headline claims hold in "
                f"every replicate; a claim shown in some replicates only is reported as such, never as a finding. "
                + rep.get("note", ""))
    body = (html_table(claims) + "<details open><summary>Headline statistics per replicate (95% interval) and over "
            "replicates</summary>" + html_table(pd.DataFrame(rep["rows"], columns=rep["columns"]),
                                         set_columns=rep["columns"][:2]) + "</details>")
    return {"id": "replicates", "title": "Replicates: the headline claims", "sentence": html.escape(sentence),
            "body": body, "figures": []}
