"""Human view of an Analysis: the tables ``mdp-trt analyze`` prints."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mdp_trt.analysis import Analysis

__all__ = ["render_analysis"]


def _short(names, limit: int = 3) -> str:
    names = list(names)
    text = ", ".join(names[:limit])
    return text + (f" (+{len(names) - limit})" if len(names) > limit else "")


def render_analysis(analysis: Analysis, console: Console) -> None:
    shape = "x".join(map(str, analysis.input_shape))
    console.print(f"[bold]{analysis.model}[/]  input {shape}: {len(analysis.layers)} layers, "
                  f"{len(analysis.groups)} channel groups "
                  f"({sum(g.prunable for g in analysis.groups)} prunable), "
                  f"{len(analysis.blocks)} residual blocks "
                  f"({sum(b.removable for b in analysis.blocks)} removable)")
    groups = Table(title="channel groups", show_lines=False)
    for column in ("id", "name", "channels", "producers", "consumers", "prunable"):
        groups.add_column(column)
    for g in analysis.groups:
        status = "yes" if g.prunable else f"[red]no[/]: {g.reason}"
        groups.add_row(str(g.id), g.name, str(g.channels), _short(g.producers),
                       _short(g.consumers), status)
    console.print(groups)
    if analysis.blocks:
        blocks = Table(title="residual blocks")
        for column in ("id", "name", "add", "layers", "removable"):
            blocks.add_column(column)
        for b in analysis.blocks:
            status = "yes" if b.removable else f"no: {b.reason}"
            blocks.add_row(str(b.id), b.name, b.add_node, _short(b.layers), status)
        console.print(blocks)
    for note in analysis.notes:
        console.print(f"[yellow]note:[/] {note}")
