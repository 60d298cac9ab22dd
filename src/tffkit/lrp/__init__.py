"""Layer-wise relevance propagation through detectors (docs/algorithms.md, "LRP rules")."""

from .engine import Explainer, Explanation, default_input_shape, input_bounds
from .registry import RuleConfig, register_rule
from .rewrite import FeatureLayer, LogitMismatchError, LogOdds, UnsupportedLayerError, build_explainable
from .trace import fold_batchnorm

__all__ = ["Explainer", "Explanation", "FeatureLayer", "LogOdds", "LogitMismatchError", "RuleConfig",
           "UnsupportedLayerError", "build_explainable", "default_input_shape", "fold_batchnorm", "input_bounds",
           "register_rule"]
