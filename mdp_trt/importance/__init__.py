"""Channel importance: per-channel scores, group rankings and each layer's cumulative vector."""

from mdp_trt.importance.methods import IMPORTANCE_METHODS, ImportanceMethod, score_channels
from mdp_trt.importance.scores import Importance

__all__ = ["Importance", "ImportanceMethod", "IMPORTANCE_METHODS", "score_channels"]
