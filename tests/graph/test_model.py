from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from mdp_trt.errors import InputError
from mdp_trt.graph import load_model, save_model
from mdp_trt.graph.shapes import static_shape
from tests import onnx_graphs as G


def _dynamic_model(path: Path, inputs: int = 1, dims=("batch", 3, "h", "w")) -> Path:
    b = G.GraphBuilder((1, 3, 8, 8))
    b.input = helper.make_tensor_value_info("image", TensorProto.FLOAT, list(dims))
    x = b.node("Relu", [b.conv("image", 3, 4, "conv")], "relu")
    b.output(x, ["batch", 4, "h", "w"])
    model = b.model()
    if inputs == 2:
        model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    onnx.save_model(model, path)
    return path


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match="nope.onnx: no such file"):
        load_model(tmp_path / "nope.onnx")


def test_garbage_file_is_not_onnx(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(InputError, match="not a readable ONNX model"):
        load_model(path)


def test_dynamic_input_without_shape_suggests_the_flag(tmp_path):
    path = _dynamic_model(tmp_path / "dyn.onnx")
    with pytest.raises(InputError) as err:
        load_model(path)
    message = str(err.value)
    assert "'image'" in message and "batchx3xhxw" in message and "`input_shape` 1x3x224x224" in message


def test_a_dynamic_batch_only_is_answered_with_the_models_own_image_size(tmp_path):
    with pytest.raises(InputError, match="`input_shape` 1x3x160x160"):
        load_model(_dynamic_model(tmp_path / "dyn.onnx", dims=("batch", 3, 160, 160)))


def test_input_shape_fixes_dynamic_dims_and_all_shapes_become_static(tmp_path):
    model = load_model(_dynamic_model(tmp_path / "dyn.onnx"), (2, 3, 16, 16))
    assert static_shape(model.graph.inputs[0]) == (2, 3, 16, 16)
    for node in model.graph:
        for out in node.outputs:
            assert static_shape(out) is not None, out.name
    assert static_shape(model.graph.outputs[0]) == (2, 4, 16, 16)


def test_input_shape_contradicting_the_file_is_refused(tmp_path):
    path = _dynamic_model(tmp_path / "dyn.onnx")
    with pytest.raises(InputError, match="contradicts"):
        load_model(path, (1, 4, 8, 8))  # 4 channels where the file says 3
    with pytest.raises(InputError, match="contradicts"):
        load_model(path, (1, 3, 8))


def test_several_inputs_are_refused(tmp_path):
    with pytest.raises(InputError, match="exactly one input.*'image', 'extra'"):
        load_model(_dynamic_model(tmp_path / "two.onnx", inputs=2), (1, 3, 8, 8))


def _big_model() -> onnx.ModelProto:
    b = G.GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 64, "conv")], "relu")
    pooled = b.node("Flatten", [x], "flatten", axis=1)  # 64 * 64 = 4096 columns
    b.output(b.gemm(pooled, 4096, 100, "fc"), [1, 100], "logits")  # 1.6 MB of weights
    return b.model()


@pytest.mark.parametrize("big", [False, True])
def test_save_model_round_trip(tmp_path, big):
    proto = _big_model() if big else G.conv_bn_relu_chain()
    model, _ = G.load(proto, tmp_path)
    out = tmp_path / "out" / "saved.onnx"
    assert save_model(model, out) == out
    data = out.parent / "saved.onnx.data"
    assert data.exists() == big
    assert sorted(p.name for p in out.parent.iterdir()) == (["saved.onnx", "saved.onnx.data"] if big else ["saved.onnx"])
    onnx.checker.check_model(str(out))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = G.run(model, x)[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_array_equal(got, expected)


def test_save_model_over_its_own_external_data_source(tmp_path):
    model, _ = G.load(_big_model(), tmp_path)
    first = tmp_path / "m.onnx"
    save_model(model, first)
    reloaded = load_model(first)  # its weights are read lazily from m.onnx.data
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = G.run(reloaded, x)[0]
    save_model(reloaded, first)  # rewrites the very file it reads from
    got = ort.InferenceSession(str(first), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_array_equal(got, expected)


def test_save_model_leaves_nothing_behind_on_failure(tmp_path):
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    # Break the graph: a node reading a value that nothing produces fails the checker.
    import onnx_ir as ir

    node = next(n for n in model.graph if n.op_type == "Relu")
    node.replace_input_with(0, ir.Value(name="dangling"))
    target = tmp_path / "bad" / "bad.onnx"
    with pytest.raises(Exception):
        save_model(model, target)
    assert list(target.parent.iterdir()) == []


def test_small_constant_of_shape_chains_are_folded(tmp_path):
    # The TorchScript exporter writes F.pad's pads as ConstantOfShape -> Concat -> ... -> Cast.
    from onnx import numpy_helper

    from mdp_trt.graph import constant_array

    nodes = [
        helper.make_node("ConstantOfShape", ["four"], ["zeros"], name="zeros",
                         value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Concat", ["ones", "zeros"], ["pads"], name="concat", axis=0),
        helper.make_node("Pad", ["x", "pads"], ["y"], name="pad"),
    ]
    graph = helper.make_graph(
        nodes, "pad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([4], np.int64), "four"),
         numpy_helper.from_array(np.array([0, 0, 1, 1], np.int64), "ones")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save_model(model, tmp_path / "pad.onnx")
    loaded = load_model(tmp_path / "pad.onnx")
    assert [n.op_type for n in loaded.graph] == ["Pad"]
    np.testing.assert_array_equal(constant_array(next(iter(loaded.graph)).inputs[1]), [0, 0, 1, 1, 0, 0, 0, 0])


def test_run_time_shapes_of_static_tensors_are_folded(tmp_path):
    # TorchScript writes x.shape[1] after a Resize as Shape -> Gather: static once inferred.
    from onnx import numpy_helper

    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["r"], name="resize", mode="nearest"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "one"], ["c"], name="gather", axis=0),
        helper.make_node("Cast", ["c"], ["cf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["r", "cf"], ["y"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes, "shape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
         numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "s.onnx")
    loaded = load_model(tmp_path / "s.onnx")
    assert [n.op_type for n in loaded.graph] == ["Resize", "Mul"]
    assert static_shape(loaded.graph.outputs[0]) == (1, 2, 8, 8)


def test_a_single_file_save_carries_weights_read_lazily_from_elsewhere(tmp_path, monkeypatch):
    # A pruned model can fall under the external-data threshold while its unchanged weights
    # are still read lazily from the original's data file: the saved file must hold them.
    import mdp_trt.graph.model as model_module

    model, _ = G.load(_big_model(), tmp_path)
    source = save_model(model, tmp_path / "src" / "m.onnx")
    reloaded = load_model(source)
    monkeypatch.setattr(model_module, "EXTERNAL_DATA_THRESHOLD_BYTES", 1 << 40)
    out = save_model(reloaded, tmp_path / "out" / "single.onnx")
    (tmp_path / "src" / "m.onnx.data").unlink()
    assert [p.name for p in out.parent.iterdir()] == ["single.onnx"]
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_array_equal(got, G.run(model, x)[0])


def test_equal_splits_get_explicit_sizes(tmp_path):
    # Surgery can only follow unequal pruning of the parts through a sizes input.
    from mdp_trt.graph import constant_array

    node = helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=1, num_outputs=2)
    graph = helper.make_graph(
        [node], "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7, 2, 2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save_model(model, tmp_path / "split.onnx")
    loaded = load_model(tmp_path / "split.onnx")
    split = next(iter(loaded.graph))
    assert "num_outputs" not in split.attributes
    np.testing.assert_array_equal(constant_array(split.inputs[1]), [4, 3])
    save_model(loaded, tmp_path / "explicit.onnx")
    x = np.arange(28, dtype=np.float32).reshape(1, 7, 2, 2)
    before = ort.InferenceSession(tmp_path / "split.onnx").run(None, {"x": x})
    after = ort.InferenceSession(tmp_path / "explicit.onnx").run(None, {"x": x})
    for want, got in zip(before, after):
        np.testing.assert_array_equal(want, got)
