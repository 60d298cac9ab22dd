"""Where our defaults and the paper's public code differ: one switch each, and the ``paper-code`` preset.

Every switch has our default and the public code's value (docs/algorithms.md, "Deviations from the public
code", says why ours differs). :func:`resolve` turns ``paper_code`` plus any switch given explicitly into
the effective settings, which each command records in its ``run.json``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Switch:
    """A behaviour with two values: ours (the default) and the public code's."""

    choices: tuple[str, ...]
    ours: str
    paper_code: str
    help: str


SWITCHES: dict[str, Switch] = {
    "prob_dtype": Switch(("float64", "float32"), "float64", "float32",
                         "precision of p(fake) = sigmoid(logit): float64, or the public code's float32 sigmoid of the "
                         "float32 logit (saturates to exactly 0/1, so confident images tie and AP changes)"),
    "cal_compare": Switch(("ge", "gt"), "ge", "gt",
                          "with the test-calibrated threshold t (one image's own score), p >= t counts as fake (ge) "
                          "or, as in the public code, p > t (gt)"),
    "neuron_seed": Switch(("activation", "one"), "activation", "one",
                          "LRP-max relevance placed at the argmax neuron: its (BN-folded) activation, or 1 as in the "
                          "public code (maps differ by that factor)"),
    "bounds": Switch(("exact", "paper-code"), "exact", "paper-code",
                     "pixel bounds of the zβ input rule (ResNet): exact per-channel (0−μ)/σ, (1−μ)/σ, or the public "
                     "code's scalars −2.118/2.640 (pixel maps only, never ω)"),
    "activation_site": Switch(("folded", "pre-bn"), "folded", "pre-bn",
                              "where max spatial activations are read (Mood's test, ranking images for LRP-max): the "
                              "BN-folded conv output, or the raw conv output before batch norm as in the public code "
                              "(differs for channels with BN γ < 0)"),
    "zplus_fallback": Switch(("depthwise", "none", "all"), "depthwise", "none",
                             "z⁺ neurons with no positive input (common in depthwise convolutions): their relevance "
                             "is spread evenly over their window in depthwise convolutions (or in all), or lost as "
                             "in the public code (none)"),
    "patch_box": Switch(("positive", "paper-code"), "positive", "paper-code",
                        "LRP-max patch box: pixels at or above the 75th percentile of the positive relevance, or as "
                        "the public code above the 75th percentile of the whole map (zeros included: in practice "
                        "every positive pixel), its last row and column excluded"),
    "random_k": Switch(("replicas", "pooled"), "replicas", "pooled",
                       "random-k dropout: seeded draws without replacement reported as mean ± std over replicas, or "
                       "the public code's protocol (draws with replacement; p(fake) of the masked models averaged "
                       "into one AP), seeded"),
    "rank_crop": Switch(("center", "random-resized"), "center", "random-resized",
                        "crop of the ranking images (tff rank): the detector's centre crop, or as the public code "
                        "RandomResizedCrop(224, scale 0.99–1, ratio 0.99–1, bilinear), seeded per image"),
    "dropout_site": Switch(("folded", "pre-bn"), "folded", "pre-bn",
                           "where a dropped feature map is zeroed: the BN-folded conv output, or the raw conv output "
                           "before batch norm as in the public code (the folded map becomes BN(0))"),
}


def resolve(paper_code: bool = False, **given: str | None) -> dict:
    """Effective settings of the named switches: the value given, else the public code's under ``paper_code``,
    else ours; returns them with ``paper_code`` itself. Unknown switches and values raise ValueError."""
    out: dict = {"paper_code": bool(paper_code)}
    for name, value in given.items():
        if name not in SWITCHES:
            raise ValueError(f"unknown switch {name!r}; known: {', '.join(SWITCHES)}")
        sw = SWITCHES[name]
        if value is None:
            value = sw.paper_code if paper_code else sw.ours
        if value not in sw.choices:
            raise ValueError(f"{name} must be one of {sw.choices}, got {value!r}")
        out[name] = value
    return out
