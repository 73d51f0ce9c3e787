"""The DenseNet lesson's Graphviz drawings: a dense block, and a plain and a residual chain of the
same depth, as DOT text for st.graphviz_chart."""

from __future__ import annotations

from models.anatomy import dense_layer_inputs


_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf"]
# Left to right, at most 13.5 x 6 inches (graphviz scales larger drawings down, never up).
_GRAPH = ('  graph [rankdir=LR, nodesep=0.1, ranksep=0.4, bgcolor="transparent", fontname="Helvetica", '
          'size="13.5,6"];\n'
          '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, margin="0.1,0.06", '
          'color="#555555"];\n'
          '  edge [arrowsize=0.6, penwidth=1.1];\n')


def dense_block_dot(layers: int, growth: int, k0: int) -> str:
    """DOT text of a dense block: input x0, layers H1..HL, concatenated output; every node feeds
    every later one. Edges: L(L+1)/2 among input and layers, plus L+1 into the output.

    Drawn as a row: neighbours are joined by straight arrows, longer connections arc above
    (from even nodes) or below (from odd nodes) so that they stay readable."""
    layers, growth, k0 = int(layers), int(growth), int(k0)
    if layers < 1 or growth < 1 or k0 < 1:
        raise ValueError("layers, growth rate and input channels must be positive")
    ins = dense_layer_inputs(layers, growth, k0)
    lines = ["digraph dense_block {", _GRAPH]
    lines.append(f'  x0 [label="input x0\\n{k0} ch", fillcolor="#e8eef7"];')
    for l in range(1, layers + 1):
        lines.append(f'  h{l} [label="H{l}\\n{ins[l - 1]} → {growth}", fillcolor="#fde9d0"];')
    total = k0 + layers * growth
    lines.append(f'  out [label="concat\\n{total} ch", fillcolor="#dff1df"];')
    nodes = ["x0"] + [f"h{l}" for l in range(1, layers + 1)] + ["out"]
    for i, src in enumerate(nodes[:-1]):
        colour = _PALETTE[i % len(_PALETTE)]
        side = "n" if i % 2 == 0 else "s"
        for j in range(i + 1, len(nodes)):
            dst = nodes[j]
            if j == i + 1:  # heavy: keeps the nodes in one straight row
                lines.append(f'  {src} -> {dst} [color="{colour}", weight=100, penwidth=1.6];')
            else:
                lines.append(f'  {src}:{side} -> {dst}:{side} [color="{colour}"];')
    lines.append("}")
    return "\n".join(lines)


def chain_dot(layers: int, width: int, residual: bool = False, growth: int | None = None) -> str:
    """DOT text of a chain of the same depth. Plain: each layer sees only the previous output
    (k channels after the first layer when `growth` is given). Residual: after each layer a (+)
    node adds the layer's input back, through a dashed identity arc; the width stays `width`."""
    layers, width = int(layers), int(width)
    name = "residual_chain" if residual else "plain_chain"
    lines = [f"digraph {name} {{", _GRAPH]
    lines.append(f'  x0 [label="input x0\\n{width} ch", fillcolor="#e8eef7"];')
    for l in range(1, layers + 1):
        if residual or not growth:
            cin = cout = width
        else:
            cin, cout = (width if l == 1 else growth), growth
        lines.append(f'  h{l} [label="H{l}\\n{cin} → {cout}", fillcolor="#fde9d0"];')
    out_ch = width if residual or not growth else growth
    lines.append(f'  out [label="output\\n{out_ch} ch", fillcolor="#dff1df"];')
    if not residual:
        nodes = ["x0"] + [f"h{l}" for l in range(1, layers + 1)] + ["out"]
        for a, b in zip(nodes, nodes[1:]):
            lines.append(f"  {a} -> {b} [weight=100, penwidth=1.6];")
    else:
        for l in range(1, layers + 1):
            lines.append(f'  p{l} [label="+", shape=circle, width=0.25, fixedsize=true, fontsize=13, '
                         f'style=filled, fillcolor="#fbe3e3", color="#d62728"];')
        before = "x0"
        for l in range(1, layers + 1):
            lines.append(f"  {before} -> h{l} [weight=100, penwidth=1.6];")
            lines.append(f"  h{l} -> p{l} [weight=100, penwidth=1.6];")
            lines.append(f'  {before}:n -> p{l}:n [style=dashed, color="#d62728", '
                         f'tooltip="identity: the input of H{l} is added to its output"];')
            before = f"p{l}"
        lines.append(f"  {before} -> out [weight=100, penwidth=1.6];")
    lines.append("}")
    return "\n".join(lines)
