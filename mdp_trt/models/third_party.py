"""Build models the way users of ultralytics and timm do, and export them with those libraries'
own exporters (or torch.onnx.export), offline and seeded.

ultralytics and timm are optional (the ``bench`` extra); each is imported only here and
only when asked for. Nothing is downloaded: YOLO models come from their YAML files
(``YOLO("yolov8n.yaml")``), timm models from ``create_model(name, pretrained=False)``.

Random weights as the libraries initialise them make poor test models: ultralytics leaves
PyTorch's default conv init (activations shrink layer by layer) and sets the Detect head's biases
to a trained model's priors (class scores near 1e-5, boxes at their anchors), so the outputs
barely depend on the input and any verification of a cut passes. ``look_trained`` gives every
BatchNorm a random affine and then the statistics of what really reaches it on random images,
and gives the head's last biases random values, so outputs move with the input.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mdp_trt.errors import InputError
from mdp_trt.extras import require

__all__ = ["ThirdPartyModel", "export_third_party", "look_trained"]

log = logging.getLogger(__name__)

Library = Literal["ultralytics", "timm"]
# "native": the library's own exporter (ultralytics ``model.export``, timm ``onnx_export``).
ThirdPartyExporter = Literal["native", "torchscript", "dynamo"]


@dataclass(frozen=True)
class ThirdPartyModel:
    """``library`` and the library's name for the model (ultralytics: a YAML file name)."""

    library: Library
    name: str
    resolution: int
    exporter: ThirdPartyExporter = "native"
    seed: int = 0
    opset: int = 17

    @property
    def label(self) -> str:
        return f"{self.name.removesuffix('.yaml')}-{self.resolution}-{self.exporter}"


def look_trained(model, resolution: int, seed: int, batches: int = 3, batch_size: int = 4) -> None:
    """A random affine for each BatchNorm, then the statistics of what reaches it on random
    images; detection heads' prior biases replaced by random ones. In place; leaves ``model``
    in eval."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.train()
    with torch.no_grad():
        # The affine first: statistics gathered after it see what each BN really receives, so
        # activations keep their size through the depth (drawn after, they compound layer by
        # layer, and a random YOLO's box logits reach 60).
        for norm in norms:
            norm.weight.copy_(0.5 + torch.rand(norm.num_features, generator=generator))
            norm.bias.copy_(0.1 * torch.randn(norm.num_features, generator=generator))
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the calibration batches
        for _ in range(batches):
            model(torch.randn(batch_size, 3, resolution, resolution, generator=generator))
        for module in model.modules():
            if hasattr(module, "bias_init") and hasattr(module, "cv2"):  # ultralytics Detect
                for branch in (*module.cv2, *module.cv3):
                    last = branch[-1]
                    last.bias.copy_(0.1 * torch.randn(last.bias.shape, generator=generator))
    model.eval()


def export_third_party(spec: ThirdPartyModel, output: str | Path) -> Path:
    """Build ``spec`` and write its ONNX file to ``output`` (atomically); returns the path."""
    require("torch", f"building a {spec.library} model")
    require("bench", f"building a {spec.library} model")
    import torch

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / output.name
        try:
            if spec.library == "ultralytics":
                _export_ultralytics(spec, staged)
            elif spec.library == "timm":
                _export_timm(spec, staged)
            else:
                raise InputError(f"unknown library {spec.library!r}; choose ultralytics or timm")
        except InputError:
            raise
        except Exception as exc:  # the library's own failure for this model/exporter
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise InputError(f"exporting {spec.library} {spec.name} ({spec.exporter}) failed: {reason}") from exc
        for path in sorted(Path(tmp).iterdir()):
            os.replace(path, output.parent / (output.name + path.name.removeprefix(staged.name)))
    log.info("exported %s %s (%s exporter) to %s", spec.library, spec.name, spec.exporter, output)
    return output


def _export_ultralytics(spec: ThirdPartyModel, path: Path) -> None:
    # ultralytics pip-installs what it misses (onnxslim, a HEIF plugin) unless told not to; an
    # install here could change torch under the user's feet.
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from ultralytics import YOLO

    yolo = YOLO(spec.name)
    look_trained(yolo.model, spec.resolution, spec.seed)
    if spec.exporter == "native":
        # The exporter writes beside the model's "file", the current folder for a YAML.
        with contextlib.chdir(path.parent):
            written = Path(yolo.export(format="onnx", imgsz=spec.resolution, opset=spec.opset,
                                       simplify=True, verbose=False))
        os.replace(path.parent / written.name, path)
    else:
        _torch_export(yolo.model, spec, path, input_name="images")


def _export_timm(spec: ThirdPartyModel, path: Path) -> None:
    import timm

    model = timm.create_model(spec.name, pretrained=False)
    look_trained(model, spec.resolution, spec.seed)
    if spec.exporter == "native":
        from timm.utils.onnx import onnx_export

        onnx_export(model, str(path), example_input=_example(spec), opset=spec.opset, check=True)
    else:
        _torch_export(model, spec, path, input_name="input")


def _example(spec: ThirdPartyModel):
    """The seeded input the exporters trace with."""
    import torch

    return torch.randn(1, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(spec.seed))


def _torch_export(model, spec: ThirdPartyModel, path: Path, *, input_name: str) -> None:
    import torch

    example = _example(spec)
    dynamo = spec.exporter == "dynamo"
    # The dynamo exporter writes opset 18; converting down to 17 leaves an invalid Split.
    opset = max(spec.opset, 18) if dynamo else spec.opset
    result = torch.onnx.export(model, (example,), None if dynamo else str(path), dynamo=dynamo,
                               opset_version=opset, input_names=[input_name])
    if dynamo:
        result.save(str(path), external_data=True)
