import pytest
from onnx import helper

from mdp_trt.analysis import (Analysis, ChannelGroup, limit_options, nothing_to_prune, option_channels,
                              require_prunable)
from mdp_trt.cli import main
from mdp_trt.errors import InputError
from mdp_trt.passes import analyze
from tests import onnx_graphs as G


def test_options_are_units_of_the_group_size_capped_at_the_width():
    assert option_channels(64, 16) == [0, 16, 32, 48, 64]
    assert option_channels(40, 16) == [0, 16, 32, 40]
    assert option_channels(64, 128) == [0, 64]
    assert option_channels(64, 16, prunable=False) == [0, 64]


def test_grouped_conv_groups_keep_equal_counts_per_conv_group():
    group = ChannelGroup(0, "g", 96, producers=("a",), consumers=(), divisions=3)
    # a 16-channel unit is rounded up to 18, a multiple of the 3 conv groups
    assert group.options(16) == [0, 18, 36, 54, 72, 90, 96]
    assert all(c % 3 == 0 for c in group.options(16))


def _analysis(*groups):
    return Analysis(model="m.onnx", input_shape=(1, 3, 8, 8), layers=(), groups=groups, blocks=())


def test_max_options_cuts_only_the_wide_groups_in_coarser_multiples_of_the_unit():
    wide = ChannelGroup(0, "fc", 4096, producers=("a",), consumers=())
    narrow = ChannelGroup(1, "stem", 64, producers=("b",), consumers=())
    grouped = ChannelGroup(2, "dw", 96, producers=("c",), consumers=(), divisions=3)
    limited = limit_options(_analysis(wide, narrow, grouped), 64, 16)
    fc, stem, dw = limited.groups
    assert fc.options(64) == list(range(0, 4097, 256))  # 64 units of 64 -> 16 units of 256
    assert stem.options(64) == [0, 64]
    # 96 channels in units of 66 (64 rounded up to 3 conv groups) are 2 options: unchanged
    assert dw.options(64) == [0, 66, 96]
    assert len(limit_options(_analysis(wide), 16, 5).groups[0].options(16)) - 1 <= 5
    assert limit_options(_analysis(wide), 64, None).groups[0].options(64) == wide.options(64)


def test_max_options_survives_saving_the_analysis(tmp_path):
    limited = limit_options(_analysis(ChannelGroup(0, "fc", 512, producers=("a",), consumers=())), 8, 4)
    limited.save(tmp_path / "a.json")
    assert Analysis.load(tmp_path / "a.json").groups[0].options(8) == [0, 128, 256, 384, 512]


def test_max_options_below_one_is_refused():
    with pytest.raises(InputError, match="`max_options` 0"):
        limit_options(_analysis(), 8, 0)


# --- models with nothing to prune ---------------------------------------------------------------


def _analyze(proto, tmp_path):
    model, path = G.load(proto, tmp_path)
    return analyze(model, str(path))


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


def test_a_model_without_layers_says_what_mdp_trt_prunes(tmp_path):
    analysis = _analyze(G.relu_only(), tmp_path)
    why = nothing_to_prune(analysis)
    assert why == ("nothing to prune: mdp-trt prunes the channels of Conv, Gemm and MatMul layers "
                   "with constant float weights, on static shapes; it has no Conv, Gemm or MatMul")
    with pytest.raises(InputError, match="model.onnx: nothing to prune"):
        require_prunable(analysis)


def test_a_qdq_model_is_told_to_prune_the_float_model(tmp_path):
    analysis = _analyze(G.qdq_convs(), tmp_path)
    assert analysis.quantized and not analysis.layers
    assert analysis.skipped[0] == ("Conv (node 'conv1'): its weight 'conv1_weight_dq_out' is "
                                   "computed at run time by DequantizeLinear (node 'conv1_weight_dq')")
    why = nothing_to_prune(analysis)
    assert "it has no such layer: Conv (node 'conv1'): its weight" in why
    assert why.endswith("It is a quantised model: prune the float model, then quantise the pruned one")


def test_weights_listed_as_inputs_from_ir_4_on_may_change_so_they_are_not_cut(tmp_path):
    model = G.conv_bn_relu_chain()  # IR 9: an initializer among the inputs is a default
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer)
    analysis = _analyze(model, tmp_path)
    assert not analysis.layers
    assert ("Conv (node 'conv1'): its weight 'conv1.weight' is a graph input, so it may change "
            "at run time; if it is a constant, remove it from the graph inputs") in analysis.skipped


def test_every_group_kept_whole_quotes_the_first_reasons(tmp_path):
    b = G.GraphBuilder((1, 3, 8, 8))
    x, cin = "image", 3
    for i in range(4):  # a softmax over the channels after each conv pins every group
        x, cin = b.node("Softmax", [b.conv(x, cin, 4, f"conv{i}")], f"softmax{i}", axis=1), 4
    b.output(x, [1, 4, 8, 8])
    why = nothing_to_prune(_analyze(b.model(), tmp_path))
    assert why.endswith(
        "every channel group must be kept whole (conv0: Softmax (node 'softmax0') normalises over "
        "the channel axis; conv1: Softmax (node 'softmax1') normalises over the channel axis; conv2: "
        "Softmax (node 'softmax2') normalises over the channel axis (and 1 more))")


def test_skipped_layers_and_quantisation_survive_saving_the_analysis(tmp_path):
    analysis = _analyze(G.qdq_convs(), tmp_path)
    analysis.save(tmp_path / "a.json")
    loaded = Analysis.load(tmp_path / "a.json")
    assert loaded.skipped == analysis.skipped and loaded.quantized
    assert nothing_to_prune(loaded) == nothing_to_prune(analysis)


def test_analyze_cli_prints_the_tables_and_the_reason(tmp_path, capsys):
    _, path = G.load(G.qdq_convs(), tmp_path)
    code, text = _cli(["analyze", str(path)], capsys)
    assert code == 0 and "channel groups" in text
    assert "nothing to prune" in " ".join(text.split())
    assert "prune the float model, then quantise" in " ".join(text.split())


@pytest.mark.parametrize("builder", ["relu_only", "qdq_convs"])
def test_prune_cli_stops_right_after_the_analysis(tmp_path, capsys, builder):
    _, path = G.load(getattr(G, builder)(), tmp_path)
    out = tmp_path / "out"
    code, text = _cli(["prune", str(path), "--budget", "0.5", "-o", str(out),
                       "--cache", str(tmp_path / "c.sqlite")], capsys)
    assert code == 2 and "Traceback" not in text
    assert "nothing to prune" in " ".join(text.split())
    assert not out.exists()
