import numpy as np
import pytest

from mdp_trt.analysis import Analysis, ChannelGroup, Layer
from mdp_trt.importance import Importance
from mdp_trt.importance.magnitude import magnitude_importance
from mdp_trt.signature import LayerSignature


def _analysis():
    sig = LayerSignature(op_type="Conv", out_channels=4, in_channels=3, kernel=(1, 1))
    layers = (
        Layer("a", "Conv", "wa", out_group=0, in_group=None, block=None, signature=sig),
        Layer("b", "Conv", "wb", out_group=0, in_group=0, block=None, signature=sig),
    )
    groups = (ChannelGroup(0, "g", 4, producers=("a", "b"), consumers=("b",)),)
    return Analysis("m.onnx", (1, 3, 8, 8), layers, groups, ())


def test_scores_are_bn_scaled_filter_norms():
    weights = {"a": np.array([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]),
               "b": np.ones((4, 2, 1, 1))}
    scales = {"a": np.array([1.0, 2.0, -3.0, 1.0]), "b": None}
    imp = magnitude_importance(_analysis(), weights.__getitem__, scales.__getitem__)
    assert imp.layer_scores["a"] == pytest.approx((5.0, 2.0, 3.0, 0.0))
    assert imp.layer_scores["b"] == pytest.approx((np.sqrt(2),) * 4)


def test_group_ranking_and_cumulative_vectors():
    analysis = _analysis()
    imp = Importance("test", {"a": (5.0, 2.0, 3.0, 0.0), "b": (0.0, 4.0, 0.0, 1.0)})
    # group sums: 5, 6, 3, 1 -> order 1, 0, 2, 3
    assert imp.ranking(analysis, 0) == [1, 0, 2, 3]
    assert imp.cumulative(analysis, "a", [0, 2, 4]) == pytest.approx([0.0, 7.0, 10.0])
    assert imp.cumulative(analysis, "b", [0, 2, 4]) == pytest.approx([0.0, 4.0, 5.0])


def test_importance_round_trips_through_json(tmp_path):
    imp = Importance("magnitude", {"a": (1.0, 2.0)})
    imp.save(tmp_path / "i.json")
    assert Importance.load(tmp_path / "i.json") == imp
