"""Layer-wise relevance propagation through detectors (SPEC §2)."""

from .engine import Explainer, Explanation, input_bounds
from .rewrite import FeatureLayer, UnsupportedLayerError, build_explainable, fold_batchnorm

__all__ = ["Explainer", "Explanation", "FeatureLayer", "UnsupportedLayerError", "build_explainable",
           "fold_batchnorm", "input_bounds"]
