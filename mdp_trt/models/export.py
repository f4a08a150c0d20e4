"""Build a torchvision classification architecture (or a detector's backbone with its FPN)
offline and export it to ONNX.

Nothing is downloaded: weights are torchvision's seeded random initialisation. With
``weights=None`` every BatchNorm is the identity (gamma 1, beta 0, mean 0, var 1), which would
make BN folding and BN-scaled importance trivially uniform; ``bn_stats="random"`` (the default)
draws the BN parameters and statistics from the same seed so exported models look like trained
ones to every pass. It also draws ConvNeXt's layer scales (initialised to 1e-6, which would make
every block invisible in the output, so a wrong cut inside one would pass verification).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mdp_trt.errors import InputError
from mdp_trt.extras import require

__all__ = ["ExportOptions", "export_architecture", "list_architectures", "list_detection_backbones"]

log = logging.getLogger(__name__)

Exporter = Literal["dynamo", "torchscript"]
BnStats = Literal["random", "identity"]


@dataclass(frozen=True)
class ExportOptions:
    input_shape: tuple[int, ...] = (1, 3, 224, 224)
    seed: int = 0
    exporter: Exporter = "dynamo"
    fold_bn: bool = True
    bn_stats: BnStats = "random"
    opset: int = 18


def list_architectures() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_detection_backbones() -> list[str]:
    """torchvision detection models whose backbone (trunk + FPN) exports on its own."""
    import torchvision

    return sorted(m for m in torchvision.models.list_models(module=torchvision.models.detection) if "_fpn" in m)


def _build(arch: str, options: ExportOptions):
    import torch
    import torchvision

    known = list_architectures()
    if arch not in known and arch not in list_detection_backbones():
        raise InputError(
            f"unknown architecture {arch!r}; choose one of torchvision's classification models, "
            f"e.g. resnet18, resnet50, vgg11_bn (all: {', '.join(known)}), or a detection model "
            f"with an FPN for its backbone ({', '.join(list_detection_backbones())})"
        )
    torch.manual_seed(options.seed)
    if arch in known:
        model = torchvision.models.get_model(arch, weights=None)
    else:
        detector = torchvision.models.get_model(arch, weights=None, weights_backbone=None)
        model = _feature_maps(detector.backbone)
    if options.bn_stats == "random":
        _randomise_statistics(model, options.seed)
    return model.eval()


def _feature_maps(backbone):
    """``backbone`` wrapped to return its feature maps as a tuple (the class is defined here,
    where torch is imported)."""
    import torch

    class FeatureMaps(torch.nn.Module):
        """A detector's backbone (trunk + FPN) returning its feature maps as a tuple: what a
        detection head reads, without the head, anchors and post-processing."""

        def __init__(self, inner):
            super().__init__()
            self.backbone = inner

        def forward(self, x):
            return tuple(self.backbone(x).values())

    return FeatureMaps(backbone)


def _output_names(model, example) -> list[str]:
    """``logits`` for a classifier; ``features_<level>`` for a backbone's feature maps."""
    import torch

    if not hasattr(model, "backbone") or not hasattr(model.backbone, "fpn"):
        return ["logits"]
    with torch.no_grad():
        levels = model.backbone(example).keys()
    return [f"features_{level}" for level in levels]


def _randomise_statistics(model, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
        for name, param in model.named_parameters():
            if name.endswith("layer_scale"):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
            elif param.dim() >= 2 and not param.any():
                # torchvision zero-initialises ViT's classifier (and class token): its logits
                # would all be 0, and every check comparing them would pass trivially.
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)


def export_architecture(arch: str, output: str | Path, options: ExportOptions = ExportOptions()) -> Path:
    """Export ``arch`` to ``output`` (ONNX, opset >= 17); returns the written path.

    The file (and its ``.data`` external-data file, dynamo exporter) appears atomically: it is
    written in a temporary directory beside the target and moved in place at the end.
    """
    require("torch", "exporting a torchvision model")
    import torch

    output = Path(output)
    shape = options.input_shape
    if len(shape) != 4 or shape[1] != 3:
        raise InputError(f"`input_shape` {'x'.join(map(str, shape))}: torchvision classification "
                         "models take images, give Nx3xHxW, e.g. 1x3x224x224",
                         parameters=("input_shape",))
    if options.opset < 17:
        raise InputError(f"opset {options.opset} is too old: mdp-trt needs opset >= 17")
    model = _build(arch, options)
    example = torch.randn(*options.input_shape, generator=torch.Generator().manual_seed(options.seed))
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / output.name
        try:
            with _quiet():
                _torch_export(model, example, staged, options)
        except Exception as exc:  # the exporter's errors come from the user's arch/shape choice
            # The first line says what failed; TorchScript appends a dump of the whole graph.
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise InputError(f"exporting {arch} at {'x'.join(map(str, shape))} failed: {reason}; "
                             "a larger `input_shape` or the other `exporter` may work",
                             parameters=("input_shape", "exporter")) from exc
        written = sorted(Path(tmp).iterdir())
        for path in written:
            os.replace(path, output.parent / path.name)
    log.info("exported %s to %s (%s)", arch, output, ", ".join(p.name for p in written))
    return output


def _torch_export(model, example, path: Path, options: ExportOptions) -> None:
    import torch

    if options.exporter == "dynamo":
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=options.opset,
            input_names=["input"], output_names=_output_names(model, example), optimize=options.fold_bn,
        )
        if not options.fold_bn:
            # The dynamo optimiser is what folds BN into Conv; without it the graph keeps raw
            # Shape/Expand/CastLike plumbing, so fold constants only.
            from onnxscript import optimizer

            optimizer.fold_constants(program.model)
            optimizer.remove_unused_nodes(program.model)
        program.save(str(path), external_data=True)
    else:
        training = torch.onnx.TrainingMode.EVAL if options.fold_bn else torch.onnx.TrainingMode.PRESERVE
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=min(options.opset, 17),
            input_names=["input"], output_names=_output_names(model, example), training=training,
            do_constant_folding=options.fold_bn,
        )


@contextlib.contextmanager
def _quiet():
    """torch.onnx prints progress lines and deprecation warnings meant for its own developers."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield
