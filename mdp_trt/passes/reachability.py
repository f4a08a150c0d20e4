"""Blocks kept so that no plan disconnects the outputs from the input.

A class-token transformer mixes tokens only in its attention: the class token, which the head
reads, sees the image through attention alone. A plan removing every attention block leaves
a model whose outputs are constant (verification still passes: the masked original is
constant too), and fine-tuning cannot bring the image back. So before solving, every removable
block is removed at once (channels whole) and the outputs' response to the input compared
with the original's: when the original's outputs depend on the input and that model's do not,
the last removable block that mixes tokens (an attention block, else the last removable block)
is kept, and the check repeats. A CNN, or a transformer with mean pooling, is left as it was.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import onnx_ir as ir

from mdp_trt.analysis import Analysis, Block
from mdp_trt.passes.masking import mask_model
from mdp_trt.passes.verify import WEAK_SENSITIVITY, input_sensitivity

__all__ = ["KEPT_FOR_THE_INPUT", "keep_outputs_reachable"]

log = logging.getLogger(__name__)

KEPT_FOR_THE_INPUT = ("kept so that the outputs still depend on the input: with every removable "
                      "block removed they do not (a class token sees the image only through "
                      "attention)")


def keep_outputs_reachable(model: ir.Model, analysis: Analysis) -> Analysis:
    """``analysis`` with the fewest blocks made non-removable (the latest first) such that
    removing all the others keeps the outputs a function of the input."""
    if not any(b.removable for b in analysis.blocks) or input_sensitivity(model) < WEAK_SENSITIVITY:
        return analysis
    while removable := [b for b in analysis.blocks if b.removable]:
        stripped = mask_model(model, analysis, {}, [b.id for b in removable])
        if input_sensitivity(stripped) >= WEAK_SENSITIVITY:
            break
        kept = _mixing(analysis, removable)[-1]
        log.info("block %s %s", kept.name, KEPT_FOR_THE_INPUT)
        analysis = replace(analysis, blocks=tuple(
            replace(b, removable=False, reason=KEPT_FOR_THE_INPUT) if b.id == kept.id else b
            for b in analysis.blocks))
    return analysis


def _mixing(analysis: Analysis, blocks: list[Block]) -> list[Block]:
    """The blocks holding an attention head group (they mix tokens), else all of ``blocks``."""
    heads = {g.id for g in analysis.groups if g.bundle > 1}
    attention = [b for b in blocks if any(analysis.layer(name).out_group in heads for name in b.layers)]
    return attention or blocks
