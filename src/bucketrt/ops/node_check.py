"""Checks every bucketrt node of an ONNX model against the op catalogue, before a runtime sees it.

ONNX Runtime gives a custom op no way to list its node's attributes: OrtKernelInfo looks them up
by name only. The kernels therefore reject wrong types, out-of-range values and names one edit
away from a declared one, but cannot see an unknown name of their own (docs/ops.md).
`bucketrt.library.ort_session` runs this check first, so that on the Python path every attribute the
PyTorch reference rejects is rejected, with the reference's words and the node's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import AttributeProto, helper

from .catalogue import BY_NAME
from .schema import DOMAIN


class _Shown:
    """A value shown in an error by what it is, not by its contents (a tensor, a graph)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def attribute_value(attribute: AttributeProto):
    """The attribute's value as the spec's checks take it: int, str, float, a list, or a
    placeholder naming a tensor or graph."""
    if attribute.type == AttributeProto.STRING:
        return attribute.s.decode("utf-8", "replace")
    if attribute.type in (AttributeProto.TENSOR, AttributeProto.SPARSE_TENSOR):
        return _Shown("a tensor")
    if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        return _Shown("a graph")
    if attribute.type == AttributeProto.STRINGS:
        return [s.decode("utf-8", "replace") for s in attribute.strings]
    if attribute.type in (AttributeProto.TENSORS, AttributeProto.SPARSE_TENSORS):
        return _Shown("a list of tensors")
    value = helper.get_attribute_value(attribute)
    return list(value) if isinstance(value, (list, tuple)) else value


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of the graph and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                yield from _nodes(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _nodes(sub)


def check_nodes(model: onnx.ModelProto | str | Path) -> None:
    """Raises ValueError for the first bucketrt node whose op is unknown or whose attributes the
    spec rejects: "node 'NAME': SignHash: unknown attribute(s) ['bits']"."""
    if not isinstance(model, onnx.ModelProto):
        # The graph alone: external weights stay on disk.
        model = onnx.load(str(model), load_external_data=False)
    for node in _nodes(model.graph):
        if node.domain != DOMAIN:
            continue
        where = f"node '{node.name}'" if node.name else "a node"
        spec = BY_NAME.get(node.op_type)
        if spec is None:
            raise ValueError(f"{where}: {DOMAIN} has no op '{node.op_type}' (ops: {', '.join(sorted(BY_NAME))})")
        try:
            spec.resolve_attributes({a.name: attribute_value(a) for a in node.attribute})
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
