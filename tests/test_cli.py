"""Bad input reaches the user as a one-line message and the documented exit code."""

import json

import pytest

from mdp_trt.cli import main, parse_shape
from mdp_trt.errors import InputError


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


def test_parse_shape():
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_shape(None) is None
    for bad in ("1x3xax4", "", "1x0x2"):
        with pytest.raises(InputError, match="not a shape"):
            parse_shape(bad)


def test_missing_model_file(tmp_path, capsys):
    code, text = run(["analyze", str(tmp_path / "nope.onnx")], capsys)
    assert code == 2 and "nope.onnx" in text and "Traceback" not in text


def test_file_that_is_not_onnx(tmp_path, capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 this is not a protobuf" * 10)
    code, text = run(["analyze", str(garbage)], capsys)
    assert code == 2 and "garbage.onnx" in text and "Traceback" not in text


def test_prune_needs_exactly_one_budget(tmp_path, capsys):
    code, text = run(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "--budget" in text
    assert not (tmp_path / "out").exists()


def test_prune_rejects_a_budget_above_one(tmp_path, capsys):
    code, text = run(["prune", str(tmp_path / "m.onnx"), "--budget", "1.5", "-o",
                      str(tmp_path / "out")], capsys)
    assert code == 2 and "fraction" in text


def test_unknown_flag_is_a_usage_error(capsys):
    code, _ = run(["analyze", "--no-such-flag"], capsys)
    assert code == 2


def test_build_without_tensorrt_says_what_to_install(tmp_path, capsys):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here; the error path cannot be exercised")
    except ImportError:
        pass
    model = tmp_path / "m.onnx"
    _tiny_onnx(model)
    code, text = run(["build", str(model), "-o", str(tmp_path / "m.engine")], capsys)
    assert code == 2 and "tensorrt" in text.lower() and "install" in text.lower()
    assert not (tmp_path / "m.engine").exists()


def test_solve_infeasible_exits_3_with_the_smallest_latency(tmp_path, capsys):
    from tests.solve.test_formulate import _instance

    problem = tmp_path / "p.json"
    problem.write_text(json.dumps(_instance(2.0)))
    code, text = run(["solve", str(problem), "--json", str(tmp_path / "plan.json")], capsys)
    assert code == 3 and "2750" in text
    assert json.loads((tmp_path / "plan.json").read_text())["status"] == "infeasible"


def _tiny_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph), str(path))


def test_analyze_prints_tables_and_writes_json(tmp_path, capsys):
    from mdp_trt.models.export import ExportOptions, export_architecture

    model = export_architecture("resnet18", tmp_path / "r18.onnx",
                                ExportOptions(input_shape=(1, 3, 32, 32), exporter="torchscript"))
    code, text = run(["analyze", str(model), "--json", str(tmp_path / "a.json")], capsys)
    assert code == 0
    assert "channel groups" in text and "residual blocks" in text and "reaches graph" in text
    analysis = json.loads((tmp_path / "a.json").read_text())
    assert len(analysis["layers"]) == 21
    assert sum(b["removable"] for b in analysis["blocks"]) == 5
