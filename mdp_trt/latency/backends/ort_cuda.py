"""The ``ort-cuda`` backend: ONNX Runtime's CUDA execution provider (``onnxruntime-gpu``).

Everything but the device is ``OrtCpuBackend``'s: the same session options, one-layer models and
timing loop. Inputs and preallocated outputs are bound in device memory through IOBinding, so a
timed call moves no data between host and GPU. ``run_with_iobinding`` synchronises the execution
providers before it returns (unless a run option ``disable_synchronize_execution_providers``
says otherwise, which is never set here), so the host clock around it measures the finished
GPU work. Nodes without a CUDA kernel fall back to the CPU provider, as they would in
deployment. Cells are always timed with hot weights: the ``cold`` protocol sizes replicas
against the CPU's last-level cache.
"""

from __future__ import annotations

import logging

from mdp_trt.errors import InputError
from mdp_trt.latency.backends.gpu import gpu_description
from mdp_trt.latency.backends.layer_model import build_layer_model
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend, ort_unavailable_reason, session_options
from mdp_trt.signature import LayerSignature

__all__ = ["OrtCudaBackend", "INSTALL_HINT"]

log = logging.getLogger(__name__)

INSTALL_HINT = ("replace the CPU wheel by the GPU one on a machine with an NVIDIA GPU: "
                "pip uninstall onnxruntime && pip install 'mdp-trt[ort-cuda]'")
_PROVIDER = "CUDAExecutionProvider"


class OrtCudaBackend(OrtCpuBackend):
    """Times one-layer models and whole ONNX models on ONNX Runtime's CUDA provider."""

    name = "ort-cuda"
    monotone_latency = False  # GPU kernels tile channels: a wider layer can be faster
    smooth_latency = False  # and their latency is a staircase in the widths

    def __init__(self, *, device_id: int = 0, **options) -> None:
        if options.get("weights", "hot") != "hot":
            raise InputError("ort-cuda times cells with hot weights only (the cold protocol is "
                             "sized for a CPU cache); drop weights='cold'")
        super().__init__(**options)
        if device_id < 0:
            raise InputError(f"CUDA device id must be >= 0, got {device_id}")
        self.device_id = device_id

    def available(self) -> str | None:
        reason = ort_unavailable_reason()
        if reason is not None:
            return reason
        import onnxruntime as ort

        if _PROVIDER not in ort.get_available_providers():
            return (f"this onnxruntime build ({ort.__version__}, providers: "
                    f"{', '.join(ort.get_available_providers())}) has no {_PROVIDER}; "
                    f"{INSTALL_HINT}")
        # The provider is compiled in whether or not a GPU, driver and CUDA libraries are
        # present; only a session shows whether it really loads (ORT falls back to the CPU
        # with a warning otherwise).
        probe = build_layer_model(LayerSignature("Gemm", 1, 1), 1, 1).SerializeToString()
        options = session_options(1)
        try:
            session = ort.InferenceSession(probe, sess_options=options,
                                           providers=self._providers())
        except Exception as exc:  # ORT raises its own types for a failed provider load
            return f"{_PROVIDER} failed to start on device {self.device_id}: {exc}"
        if _PROVIDER not in session.get_providers():
            return (f"{_PROVIDER} did not start on device {self.device_id} (no visible GPU, or "
                    "the CUDA/cuDNN libraries onnxruntime-gpu needs are missing; see "
                    "onnxruntime's warning above)")
        return None

    def layer_shares(self, path, layers) -> None:
        # ORT's per-node times under CUDA are kernel launches, not kernel run times
        return None

    def _providers(self) -> list:
        return [(_PROVIDER, {"device_id": self.device_id}), "CPUExecutionProvider"]

    def _ort_device(self) -> tuple[str, int]:
        return "cuda", self.device_id

    def _device_description(self) -> str:
        return gpu_description(self.device_id)
