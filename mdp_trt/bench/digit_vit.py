"""A small vision transformer for the MNIST digits, trained here: the trained transformer on
which the accuracy study decides how heads and MLP channels are scored (issue 18).

timm's ``VisionTransformer`` (the DeiT code: fused qkv projection, pre-norm blocks, class
token), built at 28 x 28 with 4 x 4 patches (49 tokens + the class token): ``embed`` wide,
``heads`` heads of ``embed / heads`` channels, MLPs ``mlp_ratio`` times wider, ``depth``
blocks. Trained with AdamW (``digit_resnet.train_classifier``) and exported like the ResNets.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mdp_trt.bench.digit_resnet import TrainOptions

__all__ = ["VitShape", "VIT_TRAINING", "digit_vit"]


@dataclass(frozen=True)
class VitShape:
    embed: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    patch: int = 4
    image: int = 28
    classes: int = 10


# Fixed before any pruning run; chosen on the validation part of the study's split only.
VIT_TRAINING = TrainOptions(epochs=30, batch_size=64, lr=2e-3, optimizer="adamw",
                            weight_decay=0.05, shift=2)


def digit_vit(shape: VitShape = VitShape()) -> nn.Module:
    """The transformer with timm's initialisation (seed torch before calling)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=shape.image, patch_size=shape.patch, in_chans=1,
                             num_classes=shape.classes, embed_dim=shape.embed, depth=shape.depth,
                             num_heads=shape.heads, mlp_ratio=shape.mlp_ratio)
