"""First-order Taylor importance from calibration data (Molchanov et al., CVPR 2019).

The loss change when output channel c of a layer is removed is estimated to first order by
``(sum over the channel's parameters p of p * dL/dp)^2``, computed per batch and averaged over
batches. A channel's parameters are its filter slice, its bias entry and, when the model keeps a
BatchNormalization right after the layer, that channel's gamma and beta (a folded BN is inside
the filter already). The loss is the cross-entropy against the labels when the data has them,
else against the model's own argmax predictions (the loss of drifting from what it predicts).

The graph runs in PyTorch through ``TorchGraph``; BatchNormalization uses its running statistics.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from mdp_trt.analysis import Analysis
from mdp_trt.data.datasets import ArrayDataset
from mdp_trt.errors import InputError
from mdp_trt.importance.output_scale import following_batchnorm
from mdp_trt.graph.torch_graph import TorchGraph
from mdp_trt.importance.scores import Importance
from mdp_trt.passes.groups import layer_weight_axes

__all__ = ["taylor_importance", "classifier_loss", "check_labels", "logits_of"]

log = logging.getLogger(__name__)


def _initializer_name(value: ir.Value | None) -> str | None:
    """The initializer behind ``value``, through the Identity nodes TorchScript shares them by."""
    while value is not None and value.producer() is not None:
        node = value.producer()
        if node.op_type != "Identity":
            return None
        value = node.inputs[0]
    return None if value is None else value.name


class _ChannelParams:
    """A layer's parameters that belong to its output channels, each with the channel axis."""

    def __init__(self, module: TorchGraph, node: ir.Node, channels: int) -> None:
        self.entries: list[tuple[torch.nn.Parameter, int]] = []
        self._add(module, node.inputs[1], layer_weight_axes(node)[0], channels, required=True, node=node)
        if node.op_type in ("Conv", "Gemm") and len(node.inputs) > 2:
            self._add(module, node.inputs[2], -1, channels, required=False, node=node)
        bn = following_batchnorm(node)
        if bn is not None:
            for value in bn.inputs[1:3]:  # gamma, beta
                self._add(module, value, 0, channels, required=False, node=node)

    def _add(self, module, value, axis, channels, *, required, node) -> None:
        name = _initializer_name(value)
        attr = module.parameter_names.get(name) if name is not None else None
        if attr is None:
            if required:
                raise InputError(f"layer {node.name!r}: its weight is not a trainable constant of "
                                 "the graph, so it has no gradient; use `importance` magnitude",
                                 parameters=("importance",))
            return
        param = module.get_parameter(attr)
        # A bias broadcast over the channels (one value for all) belongs to no single channel.
        if param.dim() > 0 and param.shape[axis] == channels:
            self.entries.append((param, axis))

    def scores(self, grads: dict[torch.nn.Parameter, torch.Tensor]) -> torch.Tensor:
        total = 0
        for param, axis in self.entries:
            product = (param.detach() * grads[param]).movedim(axis, 0)
            total = total + product.reshape(product.shape[0], -1).sum(dim=1)
        return total.to(torch.float64) ** 2


def logits_of(module: TorchGraph, x: torch.Tensor) -> torch.Tensor:
    """The first output of ``module`` on ``x``, checked to be (batch, classes) logits."""
    out = module(x)
    logits = out[0] if isinstance(out, tuple) else out
    if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise InputError(f"the model's first output {module.output_names[0]!r} has shape "
                         f"{list(logits.shape)} for a batch of {x.shape[0]}; taylor importance and "
                         "finetune need a classifier with (batch, classes) logits")
    return logits


def check_labels(labels: np.ndarray | None, classes: int) -> None:
    """Raise InputError unless every label is a class index of a model with ``classes`` outputs."""
    if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise InputError(f"labels must be class indices in 0..{classes - 1} (the model has "
                         f"{classes} outputs); the data holds {labels.min()}..{labels.max()}")


def classifier_loss(logits: torch.Tensor, labels: np.ndarray | None) -> torch.Tensor:
    """Cross-entropy against ``labels``, or against the model's own argmax when there are none."""
    if labels is None:
        target = logits.detach().argmax(dim=1)
    else:
        check_labels(labels, logits.shape[1])
        target = torch.from_numpy(labels).to(logits.device)
    return F.cross_entropy(logits, target)


def taylor_importance(model: ir.Model, analysis: Analysis, dataset: ArrayDataset, *,
                      batch_size: int = 32, max_samples: int = 512, seed: int = 0,
                      progress: bool = True) -> Importance:
    """Scores every layer of ``analysis`` on at most ``max_samples`` samples of ``dataset``
    (a subset drawn by ``seed`` when it holds more); the same inputs give the same scores."""
    if len(dataset) == 0:
        raise InputError("the calibration data is empty; give at least one sample")
    if max_samples < 1:
        raise InputError(f"max_samples {max_samples} must be >= 1")
    if len(dataset) > max_samples:
        dataset = dataset.split(max_samples / len(dataset), seed)[0]
    module = TorchGraph.from_model(model)
    nodes = {node.name: node for node in model.graph}
    # Scores per output channel of each layer (a layer may produce a part of its group).
    layers = {layer.name: _ChannelParams(module, nodes[layer.name], layer.signature.out_channels)
              for layer in analysis.layers}
    params = list({id(p): p for entry in layers.values() for p, _ in entry.entries}.values())
    totals = {layer.name: torch.zeros(layer.signature.out_channels, dtype=torch.float64)
              for layer in analysis.layers}

    from rich.console import Console
    from rich.progress import track

    batches = dataset.batches(batch_size)
    count = -(-len(dataset) // batch_size)
    for x, y in track(batches, description="taylor importance", total=count,
                      disable=not progress, console=Console(stderr=True)):
        loss = classifier_loss(logits_of(module, torch.from_numpy(x)), y)
        grads = dict(zip(params, torch.autograd.grad(loss, params)))
        for name, entry in layers.items():
            totals[name] += entry.scores(grads)
    log.info("taylor importance of %d layers from %d samples in %d batches",
             len(layers), len(dataset), count)
    return Importance(method="taylor", layer_scores={
        name: tuple(float(v) for v in (total / count).tolist()) for name, total in totals.items()})
