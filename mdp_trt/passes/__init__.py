"""Graph passes: analysis, surgery, masking and numerical verification."""

from mdp_trt.passes.analyze import analyze
from mdp_trt.passes.masking import mask_model
from mdp_trt.passes.surgery import apply_plan
from mdp_trt.passes.verify import Verification, verify

__all__ = ["analyze", "apply_plan", "mask_model", "verify", "Verification"]
