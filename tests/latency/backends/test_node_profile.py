from mdp_trt.latency.backends.node_profile import _fits, match_layers, profile_nodes
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend, session_options
from mdp_trt.passes import analyze
from tests.onnx_graphs import load, projection_skip


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


def test_the_ort_cpu_backend_profiles_layers_and_its_session_options_stay_unprofiled(tmp_path):
    model, path = load(projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    options = session_options(1)
    profile_nodes(path, options, ["CPUExecutionProvider"], budget_s=0.0, min_runs=1)
    assert not options.enable_profiling
    with OrtCpuBackend() as backend:
        shares = backend.layer_shares(path, analysis.layers)
    assert set(shares) == {layer.name for layer in analysis.layers}
    assert all(s > 0 for s in shares.values()) and sum(shares.values()) <= 1


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
