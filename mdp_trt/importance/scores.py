"""The Importance stage result: per-layer channel scores and the rankings they induce.

A group's channels are ranked by the sum of its producer layers' scores (residual Adds force
identical channel sets, so a channel is only as removable as its combined score says; a layer
producing a part of its group scores only the channels of that part). A layer's
cumulative vector ``I_l[k]`` is the sum of *its own* scores over the group's top channels at
option k, as in method.md: a block's importance is the sum of its layers' shares.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdp_trt.analysis import Analysis

__all__ = ["Importance"]

FORMAT = "mdp-importance/1"


@dataclass(frozen=True)
class Importance:
    method: str
    layer_scores: dict[str, tuple[float, ...]]  # per layer: one score per output channel

    def group_scores(self, analysis: Analysis, group: int) -> np.ndarray:
        info = analysis.groups[group]
        total = np.zeros(info.channels)
        for name in info.producers:
            total += self._placed(analysis, name)
        return total

    def _placed(self, analysis: Analysis, layer: str) -> np.ndarray:
        """The layer's scores at its channels of its group (it may produce a part), else 0."""
        info = analysis.layer(layer)
        scores = np.zeros(analysis.groups[info.out_group].channels)
        own = np.asarray(self.layer_scores[layer], dtype=np.float64)
        # A layer of a periodic group holds each channel several times: its copies add up.
        np.add.at(scores, (info.out_first + np.arange(len(own))) % len(scores), own)
        return scores

    def ranking(self, analysis: Analysis, group: int) -> list[int]:
        """Channel indices of ``group``, most important first (ties broken by index: stable);
        its pinned channels, which every plan keeps, come first."""
        scores = self.group_scores(analysis, group)
        for start, stop in analysis.groups[group].pinned:
            scores[start:stop] = np.inf
        bundle = analysis.groups[group].bundle
        if bundle > 1:
            # Whole bundles (heads), the most important sum first, each in channel order.
            order = np.argsort(-scores.reshape(-1, bundle).sum(axis=1), kind="stable")
            return [int(b * bundle + i) for b in order for i in range(bundle)]
        return [int(i) for i in np.argsort(-scores, kind="stable")]

    def cumulative(self, analysis: Analysis, layer: str, option_channels: list[int]) -> list[float]:
        """``I_l[k]``: layer's summed score over the group's top ``option_channels[k]`` channels."""
        out_group = analysis.layer(layer).out_group
        order = self.ranking(analysis, out_group)
        prefix = np.concatenate([[0.0], np.cumsum(self._placed(analysis, layer)[order])])
        return [float(prefix[c]) for c in option_channels]

    def to_json(self) -> dict:
        return {"format": FORMAT, "method": self.method,
                "layer_scores": {k: list(v) for k, v in self.layer_scores.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Importance":
        return cls(method=data["method"],
                   layer_scores={k: tuple(v) for k, v in data["layer_scores"].items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> "Importance":
        return cls.from_json(json.loads(Path(path).read_text()))
