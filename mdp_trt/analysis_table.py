"""Human view of an Analysis: the tables ``mdp-trt analyze`` prints."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text
from rich.table import Table

from mdp_trt.analysis import Analysis, nothing_to_prune

__all__ = ["render_analysis"]


def render_analysis(analysis: Analysis, console: Console) -> None:
    shape = "x".join(map(str, analysis.input_shape))
    # Paths and reasons are printed literally (Text), never parsed as rich markup.
    console.print(Text.assemble((analysis.model, "bold"), f"  input {shape}: {len(analysis.layers)} layers, "
                  f"{len(analysis.groups)} channel groups "
                  f"({sum(g.prunable for g in analysis.groups)} prunable), "
                  f"{len(analysis.blocks)} residual blocks "
                  f"({sum(b.removable for b in analysis.blocks)} removable)"))
    layers = Table(title="prunable layers")
    layers.add_column("layer", no_wrap=True)
    for column in ("op", "kernel/stride", "input", "out (group)", "in (group)", "block"):
        layers.add_column(column)
    block_names = {b.id: b.name for b in analysis.blocks}
    for layer in analysis.layers:
        sig = layer.signature
        geometry = ("x".join(map(str, sig.kernel)) + "/" + "x".join(map(str, sig.strides))
                    if sig.kernel else "-")
        layers.add_row(layer.name, layer.op_type + (" dw" if sig.depthwise else ""), geometry,
                       "x".join(map(str, sig.input_hw)) or "-",
                       f"{sig.out_channels} ({layer.out_group})",
                       f"{sig.in_channels} ({'input' if layer.in_group is None else layer.in_group})",
                       block_names.get(layer.block, "-"))
    console.print(layers)
    groups = Table(title="channel groups")
    groups.add_column("id", justify="right")
    groups.add_column("group")
    groups.add_column("channels", justify="right")
    groups.add_column("out/in layers", justify="right")
    groups.add_column("prunable", overflow="fold")
    for g in analysis.groups:
        # Reasons quote node names: literal Text, never rich markup.
        status = Text("yes") if g.prunable else Text.assemble(("no", "red"), f": {g.reason}")
        if g.prunable and g.bundle > 1:
            status.append(f", in {g.channels // g.bundle} attention heads of {g.bundle}")
        if g.pinned:
            status.append(f", keeping {g.pinned_channels} channels: {g.pinned_reason}")
        groups.add_row(str(g.id), g.name, str(g.channels),
                       f"{len(g.producers)}/{len(g.consumers)}", status)
    console.print(groups)
    if analysis.blocks:
        blocks = Table(title="residual blocks")
        blocks.add_column("id", justify="right")
        blocks.add_column("block")
        blocks.add_column("layers", justify="right")
        blocks.add_column("removable", overflow="fold")
        for b in analysis.blocks:
            status = "yes" if b.removable else f"no: {b.reason}"
            blocks.add_row(str(b.id), b.name, str(len(b.layers)), status)
        console.print(blocks)
    for note in analysis.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))
    why = nothing_to_prune(analysis)
    if why is not None:
        # The same reason ``prune`` stops with, so analyze answers the question first.
        console.print(Text.assemble(("warning: ", "bold red"), why))
