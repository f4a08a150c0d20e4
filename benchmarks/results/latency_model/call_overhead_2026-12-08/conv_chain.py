import numpy as np, onnx, time
from onnx import helper, TensorProto, numpy_helper
import onnxruntime as ort
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend
from mdp_trt.signature import LayerSignature
from mdp_trt.latency.tables.overhead import OVERHEAD_CELL

def chain(n, c, hw, relu=True):
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for k in range(n):
        w = numpy_helper.from_array(rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.05, f"w{k}")
        b = numpy_helper.from_array(np.zeros(c, np.float32), f"b{k}")
        inits += [w, b]
        y = f"c{k}"
        nodes.append(helper.make_node("Conv", [x, f"w{k}", f"b{k}"], [y], pads=[1,1,1,1], kernel_shape=[3,3], name=f"conv{k}"))
        if relu:
            nodes.append(helper.make_node("Relu", [y], [f"r{k}"])); y = f"r{k}"
        x = y
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c, hw, hw])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return m

import sys
c, hw = int(sys.argv[1]), int(sys.argv[2])
sig = LayerSignature("Conv", c, c, kernel=(3,3), strides=(1,1), pads=(1,1,1,1), dilations=(1,1), input_hw=(hw,hw), activation="Relu")
with OrtCpuBackend() as b:
    for rep in range(2):
        cell = b.measure_layer(sig, c, c).median_ms
        ov = b.measure_layer(OVERHEAD_CELL.signature, 1, 1).median_ms
        res = []
        for n in (1, 2, 5, 10, 20):
            p = f"/tmp/exp/chain{n}.onnx"; onnx.save(chain(n, c, hw), p)
            res.append((n, b.measure_model(p).median_ms))
        slope = (res[-1][1] - res[1][1]) / (res[-1][0] - res[1][0])
        print(f"c={c} hw={hw}: cell {cell*1000:.2f} us, overhead {ov*1000:.2f} us, net {1000*(cell-ov):.2f}; chain " +
              ", ".join(f"{n}:{ms*1000:.1f}" for n, ms in res) + f"; per extra layer {slope*1000:.2f} us")
