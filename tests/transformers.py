"""Tiny vision transformers written as timm and torchvision write theirs, for the attention
tests: fused or separate q/k/v projections, a hand-written or a fused scaled dot product,
pre- or post-norm blocks, a class token or mean pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Shape:
    heads: int = 2
    head_dim: int = 4
    mlp_ratio: int = 2
    depth: int = 2
    fused: bool = True  # one qkv projection (timm) or three (q, k, v)
    sdpa: bool = False  # F.scaled_dot_product_attention instead of softmax(q k^T) v
    pre_norm: bool = True
    class_token: bool = True  # else mean pooling
    score_bias: bool = False  # a learned per-head bias added to the scores (Swin's relative bias)
    image: int = 16
    patch: int = 4

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim


class Attention(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.shape = shape
        if shape.fused:
            self.qkv = nn.Linear(shape.dim, 3 * shape.dim)
        else:
            self.q, self.k, self.v = (nn.Linear(shape.dim, shape.dim) for _ in range(3))
        self.proj = nn.Linear(shape.dim, shape.dim)
        tokens = (shape.image // shape.patch) ** 2 + shape.class_token
        self.bias = nn.Parameter(torch.randn(1, shape.heads, tokens, tokens)) if shape.score_bias else None

    def forward(self, x):
        b, n, c = x.shape
        h, d = self.shape.heads, self.shape.head_dim
        if self.shape.fused:
            q, k, v = self.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (layer(x).reshape(b, n, h, d).transpose(1, 2) for layer in (self.q, self.k, self.v))
        if self.shape.sdpa:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        else:
            scores = (q * d ** -0.5) @ k.transpose(-2, -1)
            out = (scores if self.bias is None else scores + self.bias).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, h * d))


class Block(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.pre_norm = shape.pre_norm
        self.norm1, self.norm2 = nn.LayerNorm(shape.dim), nn.LayerNorm(shape.dim)
        self.attn = Attention(shape)
        self.mlp = nn.Sequential(nn.Linear(shape.dim, shape.mlp_ratio * shape.dim), nn.GELU(),
                                 nn.Linear(shape.mlp_ratio * shape.dim, shape.dim))

    def forward(self, x):
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class TinyViT(nn.Module):
    def __init__(self, shape: Shape, classes: int = 5):
        super().__init__()
        self.shape = shape
        tokens = (shape.image // shape.patch) ** 2 + shape.class_token
        self.embed = nn.Conv2d(3, shape.dim, shape.patch, stride=shape.patch)
        self.cls = nn.Parameter(torch.randn(1, 1, shape.dim)) if shape.class_token else None
        self.pos = nn.Parameter(torch.randn(1, tokens, shape.dim) * 0.1)
        self.blocks = nn.Sequential(*(Block(shape) for _ in range(shape.depth)))
        self.norm = nn.LayerNorm(shape.dim)
        self.head = nn.Linear(shape.dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos))
        return self.head(x[:, 0] if self.cls is not None else x.mean(dim=1))


def tiny_vit(shape: Shape, seed: int = 0) -> TinyViT:
    """Seeded random weights, LayerNorm affines random too (so that no channel is trivially
    zero or equal to another)."""
    torch.manual_seed(seed)
    model = TinyViT(shape)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
            elif isinstance(module, nn.Linear):
                module.bias.normal_(0, 0.1)
    return model.eval()


def torchvision_vit(heads: int = 2, head_dim: int = 4, layers: int = 2, seed: int = 0) -> nn.Module:
    """torchvision's VisionTransformer (nn.MultiheadAttention) at a tiny size, random head."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(image_size=16, patch_size=4, num_layers=layers, num_heads=heads,
                              hidden_dim=heads * head_dim, mlp_dim=2 * heads * head_dim,
                              num_classes=5)
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.5)  # torchvision initialises it to zero
    return model.eval()
