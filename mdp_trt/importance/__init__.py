"""Channel importance: per-channel scores, group rankings and each layer's cumulative vector."""

from mdp_trt.importance.scores import Importance

__all__ = ["Importance"]
