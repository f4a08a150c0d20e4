import pytest

from mdp_trt.graph import load_model
from mdp_trt.latency.backends.node_profile import (_fits, graph_node, layer_times, match_layers,
                                                   profile_nodes)
from mdp_trt.latency.backends import ort_cpu
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend, session_options
from mdp_trt.latency.protocol import Measurement
from mdp_trt.passes import analyze
from tests.onnx_graphs import export_module, load, projection_skip


def test_every_layer_gets_its_in_model_time_even_where_ort_renamed_the_fused_node(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ORT writes its profile to the working directory by default
    model, path = load(projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    nodes, run_ms = profile_nodes(path, session_options(1), ["CPUExecutionProvider"],
                                  budget_s=0.05, min_runs=3)
    # ORT fuses Conv+Relu and BN into the conv: some layers keep no node of their own name
    assert {layer.name for layer in analysis.layers} - {n.name for n in nodes}
    matched = match_layers(path, analysis.layers, nodes)
    assert set(matched) == {layer.name for layer in analysis.layers}
    assert len({node.name for node in matched.values()}) == len(matched)
    assert all(n.ms > 0 for n in matched.values()) and sum(n.ms for n in matched.values()) <= run_ms
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_the_ort_cpu_backend_profiles_layers_and_its_session_options_stay_unprofiled(
        tmp_path, monkeypatch):
    # a model this small runs much slower profiled; how much is the machine's, not tested here
    monkeypatch.setattr(ort_cpu, "MAX_PROFILE_SLOWDOWN", float("inf"))
    model, path = load(projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    options = session_options(1)
    profile_nodes(path, options, ["CPUExecutionProvider"], budget_s=0.0, min_runs=1)
    assert not options.enable_profiling
    with OrtCpuBackend() as backend:
        shares = backend.layer_shares(path, analysis.layers)
    assert set(shares) == {layer.name for layer in analysis.layers}
    assert all(s > 0 for s in shares.values()) and sum(shares.values()) <= 1


@pytest.mark.parametrize("slowdown, shared", [(1.2, True), (3.0, False)])
def test_no_shares_where_the_profiler_slows_the_run_too_much(tmp_path, monkeypatch, slowdown,
                                                              shared):
    model, path = load(projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    with OrtCpuBackend() as backend:
        plain_ms = backend.measure_model(path).median_ms
        real = ort_cpu.node_profile.profile_nodes

        def profiled(*args, **kw):  # the real nodes, the run as slowed as the case says
            nodes, _ = real(*args, **kw)
            return nodes, slowdown * plain_ms

        monkeypatch.setattr(ort_cpu.node_profile, "profile_nodes", profiled)
        monkeypatch.setattr(OrtCpuBackend, "_time_session",
                            lambda self, session, feeds, policy: Measurement(plain_ms, 0.0, 10,
                                                                             plain_ms, plain_ms))
        shares = backend.layer_shares(path, analysis.layers)
    assert (shares is not None) == shared


def test_a_layer_without_a_node_is_left_out(tmp_path):
    model, path = load(projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    nodes, _ = profile_nodes(path, session_options(1), ["CPUExecutionProvider"], budget_s=0.0,
                             min_runs=1)
    # the only 1x1 conv: no other node can stand for it
    kept = [n for n in nodes if n.key[0][2:] != (1, 1)]
    assert set(match_layers(path, analysis.layers, kept)) == {
        layer.name for layer in analysis.layers} - {"downsample"}


def test_padded_nchwc_weights_match_their_layer_and_exact_keys_come_first():
    layer_12 = ((12, 8, 3, 3), (8, 8))
    assert _fits(((16, 8, 3, 3), (8, 8)), layer_12, exact=False)
    assert not _fits(((16, 8, 3, 3), (8, 8)), layer_12, exact=True)
    assert not _fits(((24, 8, 3, 3), (8, 8)), layer_12, exact=False)
    assert not _fits(((16, 8, 1, 1), (8, 8)), ((16, 8, 3, 3), (8, 8)), exact=False)
    assert not _fits(((16, 8, 3, 3), (4, 4)), ((16, 8, 3, 3), (8, 8)), exact=False)


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_transformer_layer_gets_its_fused_node_and_an_attention_layer_its_core(tmp_path,
                                                                               dynamo):
    pytest.importorskip("torch")
    from tests.transformers import Shape, tiny_vit

    shape = Shape(heads=2, head_dim=8)
    path = export_module(tiny_vit(shape), tmp_path / "vit.onnx",
                         input_shape=(1, 3, shape.image, shape.image), dynamo=dynamo)
    analysis = analyze(load_model(path), str(path))
    nodes, _ = profile_nodes(path, session_options(1), ["CPUExecutionProvider"], budget_s=0.0,
                             min_runs=1)
    # ORT runs each MatMul+Add as one Gemm named "<MatMul's name>/MatMulAddFusion"
    assert any(graph_node(n.name, {l.name for l in analysis.layers}) not in (None, n.name)
               for n in nodes)
    matched = match_layers(path, analysis.layers, nodes)
    assert set(matched) == {layer.name for layer in analysis.layers}
    times = layer_times(path, analysis.layers, nodes)
    attention = [layer for layer in analysis.layers if layer.signature.attention]
    assert len(attention) == shape.depth
    for layer in analysis.layers:
        core = [n for n in nodes if graph_node(n.name, set(layer.core_nodes))]
        assert bool(core) == (layer in attention)
        # the core's products of q and k, then of the weights and v, and its Softmax
        ops = [n.op for n in core]
        assert not core or (ops.count("Softmax"), ops.count("MatMul") + ops.count("FusedMatMul")
                            ) == (1, 2)
        assert times[layer.name] == pytest.approx(matched[layer.name].ms + sum(n.ms for n in core))


def test_a_profiled_node_runs_the_graph_node_named_before_a_fusion_suffix():
    names = {"/blocks/attn/qkv/MatMul", "/blocks/attn/MatMul", "node_view_1"}
    assert graph_node("/blocks/attn/qkv/MatMul/MatMulAddFusion", names) == "/blocks/attn/qkv/MatMul"
    assert graph_node("/blocks/attn/MatMul/MatMulScaleFusion/", names) == "/blocks/attn/MatMul"
    assert graph_node("node_view_1", names) == "node_view_1"
    # a longer name is another node, not a fusion of this one
    assert graph_node("node_view_10", names) is None
    assert graph_node("Transpose_token_3", names) is None
