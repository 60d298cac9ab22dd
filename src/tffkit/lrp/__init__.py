"""Layer-wise relevance propagation through detectors (docs/algorithms.md, "LRP rules")."""

from ..heads import LogOdds, default_input_shape
from .check import RelevanceCheck, RelevanceWarning, check_relevance
from .composite import Composite
from .convs import ConvEpsilon, Gamma, ZBox, ZPlus
from .engine import Explainer, Explanation, input_bounds
from .registry import COMPOSITES, DEFAULT, RuleConfig, named
from .rewrite import FeatureLayer, LogitMismatchError, UnsupportedLayerError, build_explainable
from .summary import RuleEntry
from .trace import fold_batchnorm

__all__ = ["COMPOSITES", "DEFAULT", "Composite", "ConvEpsilon", "Explainer", "Explanation", "FeatureLayer", "Gamma",
           "LogOdds", "LogitMismatchError", "RelevanceCheck", "RelevanceWarning", "RuleConfig", "RuleEntry",
           "UnsupportedLayerError", "ZBox", "ZPlus", "build_explainable", "check_relevance", "default_input_shape",
           "fold_batchnorm", "input_bounds", "named"]
