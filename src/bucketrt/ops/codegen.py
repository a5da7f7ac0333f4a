"""What is generated from the op spec: the C++ header the native library is built with, and
docs/ops.md.

    PYTHONPATH=src python -m bucketrt.ops.codegen header build/generated/bucketrt/op_specs.h
    PYTHONPATH=src python -m bucketrt.ops.codegen markdown docs/ops.md

CMake runs the first while the library is built (standard library only: see `schema`); a test
keeps docs/ops.md current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .catalogue import ACTIVATION_FUNCTIONS, EXPERT_ACTIVATIONS, OPS
from .schema import (
    DOMAIN,
    FLOAT,
    PLUGIN_NAMESPACE,
    PLUGIN_NAMESPACE_ATTRIBUTE,
    PLUGIN_VERSION_ATTRIBUTE,
    VERSION,
    OpSpec,
    Tensor,
)


def cpp_header() -> str:
    """C++ view of the catalogue, for the kernels' generic validation and op registration."""
    dtype = {"int32": "DType::kInt32", "int8": "DType::kInt8", FLOAT: "DType::kFloat"}
    float_dtype = {"float32": "DType::kFloat32", "float16": "DType::kFloat16"}
    lines = [
        "// Generated from the op spec (src/bucketrt/ops/catalogue.py) by CMake. Do not edit.",
        "#pragma once",
        "#include <cstdint>",
        "",
        '#include "bucketrt/spec_types.h"',
        "",
        "namespace bucketrt::spec {",
        f'inline constexpr const char* kDomain = "{DOMAIN}";',
        f"inline constexpr int kVersion = {VERSION};",
        "// Routing attributes every node carries (TensorRT's plugin lookup); kernels ignore them.",
        f'inline constexpr const char* kPluginNamespace = "{PLUGIN_NAMESPACE}";',
        f'inline constexpr const char* kPluginVersionAttribute = "{PLUGIN_VERSION_ATTRIBUTE}";',
        f'inline constexpr const char* kPluginNamespaceAttribute = "{PLUGIN_NAMESPACE_ATTRIBUTE}";',
    ]
    for op in OPS:
        ident = op.name
        for kind, tensors in (("Inputs", op.inputs), ("Outputs", op.outputs)):
            rows = []
            for t in tensors:
                dims = ", ".join(f'"{d}"' for d in t.dims)
                rows.append(f'  {{"{t.name}", {dtype[t.dtype]}, {len(t.dims)}, {{{dims}}}}},')
            lines += [f"inline constexpr TensorSpec k{ident}{kind}[] = {{", *rows, "};"]
        # -- attributes: AttrSpec rows, with each attribute's allowed ints beside them --
        rows = []
        for a in op.attributes:
            default = "nullptr" if a.default is None else f'"{a.default}"'
            minimum = "kNoMinimum" if a.minimum is None else str(a.minimum)
            maximum = "kNoMaximum" if a.maximum is None else str(a.maximum)
            choices = "|".join(a.choices)
            allowed, num_allowed = "nullptr", 0
            if a.allowed:
                allowed, num_allowed = f"k{ident}_{a.name}_allowed", len(a.allowed)
                lines.append(f"inline constexpr long long {allowed}[] = {{{', '.join(map(str, a.allowed))}}};")
            rows.append(
                f'  {{"{a.name}", AttrType::k{a.type.capitalize()}, {default}, {minimum}, {maximum}, '
                f'{str(a.power_of_two).lower()}, "{choices}", {allowed}, {num_allowed}}},'
            )
        lines += [f"inline constexpr AttrSpec k{ident}Attributes[] = {{", *(rows or ["  {}"]), "};"]
        types = ", ".join(float_dtype[t] for t in op.float_types)
        lines += [f"inline constexpr DType k{ident}FloatTypes[] = {{{types}}};"]
        lines += [
            f'inline constexpr OpSpec k{ident} = {{"{op.name}", '
            f"k{ident}Inputs, {len(op.inputs)}, k{ident}Outputs, {len(op.outputs)}, "
            f"k{ident}Attributes, {len(op.attributes)}, k{ident}FloatTypes, {len(op.float_types)}}};",
        ]
        lines += _cpp_op_namespace(op)
    lines.append("inline constexpr const OpSpec* kAllOps[] = {" + ", ".join(f"&k{op.name}" for op in OPS) + "};")
    # ExpertFFN's activations: the functions as an enum, the names as a table onto it.
    camel = {f: "k" + "".join(part.capitalize() for part in f.split("_")) for f in ACTIVATION_FUNCTIONS}
    lines += [
        "// ExpertFFN's activation functions (catalogue.py EXPERT_ACTIVATIONS); the kernels switch over every one.",
        "enum class Activation { " + ", ".join(camel[f] for f in ACTIVATION_FUNCTIONS) + " };",
        f"inline constexpr int kNumActivations = {len(ACTIVATION_FUNCTIONS)};",
        "struct ActivationName {",
        "  const char* name;",
        "  Activation function;",
        "};",
        "inline constexpr ActivationName kActivationNames[] = {",
        *(f'  {{"{name}", Activation::{camel[f]}}},' for name, f in EXPERT_ACTIVATIONS.items()),
        "};",
    ]
    lines += [
        "}  // namespace bucketrt::spec",
        "",
        "// The op table every registration walks (plugins/ort/register.cc): X(Op) once per op, in",
        "// catalogue order. Each op needs a CPU kernel class ort::<Op>Kernel; a missing one is a",
        "// compile error, not an op that silently lacks a backend.",
        "#define BUCKETRT_FOR_EACH_OP(X) " + " ".join(f"X({op.name})" for op in OPS),
        "",
    ]
    return "\n".join(lines)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _cpp_op_namespace(op: OpSpec) -> list[str]:
    """Per op, namespace spec::<Op>: its input and output indices (spec order) and a dims struct with one
    member per symbolic dim, so kernels write `dims.Nq` and a renamed dim is a compile error rather
    than an unbound look-up at run time."""
    inputs = [f"k{_camel(t.name)}" for t in op.inputs]
    outputs = [f"k{_camel(t.name)}" for t in op.outputs]
    clash = set(inputs) & set(outputs)
    if clash:
        raise ValueError(f"{op.name}: input and output share the C++ name(s) {sorted(clash)}")
    symbols: list[str] = []
    for t in (*op.inputs, *op.outputs):
        for d in t.dims:
            if d.isidentifier() and d not in symbols:
                symbols.append(d)
    lines = [
        f"namespace {op.name} {{",
        "enum Input : int { " + ", ".join(inputs) + " };",
        "enum Output : int { " + ", ".join(outputs) + " };",
        "// Every symbolic dim of the op, bound by BindInputs (an attribute-named dim takes its value).",
        "struct Dims {",
        *(f"  int64_t {d};" for d in symbols),
        "  // From the bindings BindInputs filled (validate.h's Bindings, or anything with operator[](const char*)).",
        "  template <class Env>",
        "  static Dims From(const Env& env) {",
        "    Dims d;",
        *(f'    d.{d} = env["{d}"];' for d in symbols),
        "    return d;",
        "  }",
        "};",
        f"}}  // namespace {op.name}",
    ]
    return lines


def markdown() -> str:
    out = [
        "# bucketrt ops",
        "",
        "<!-- Generated from the op spec, src/bucketrt/ops/catalogue.py (`PYTHONPATH=src python -m bucketrt.ops.codegen markdown docs/ops.md`). -->",
        "",
        f"All ops live in the ONNX domain `{DOMAIN}`, version {VERSION}. Dims are symbols: equal symbols "
        "must have equal sizes, and a symbol named like an attribute takes its value. Every backend "
        "rejects a violation with an error that names the op and the input.",
        "",
        "Every attribute has the type and the bounds its table states (an int its range or its allowed "
        "values, a string its choices). Every backend (the PyTorch reference, the exporter, the ONNX "
        "Runtime CPU and CUDA kernels, the TensorRT plugins) rejects, when the node is created, an "
        "attribute out of its bounds, of another type, or that the op does not have, with an error "
        "that names the op and the attribute and says what is allowed. One limit: ONNX Runtime shows a "
        "custom op no list of its node's attributes, only a look-up by name, so its kernels reject an "
        "unknown name one edit away from one of the op's attributes (a letter dropped, added, changed "
        "or swapped: `chunks_befor`, `activatio`, `Causal`) and cannot see one further off. "
        "`bucketrt.ort_session` closes that gap for Python users: it checks every bucketrt node of the "
        "model against this catalogue (`bucketrt.ops.node_check.check_nodes`) before ONNX Runtime sees "
        "it. The other backends see every name.",
        "",
        f"Every node also carries the string attributes `{PLUGIN_VERSION_ATTRIBUTE}` (the op's version) and "
        f"`{PLUGIN_NAMESPACE_ATTRIBUTE}` (`{PLUGIN_NAMESPACE}`), with which TensorRT's ONNX parser finds the op's "
        "plugin. They route the node and do not change what it computes; every backend accepts and ignores them.",
        "",
    ]
    for op in OPS:
        # A single float type is printed as such; several as T, with a line saying what T may be.
        def shown(t: Tensor) -> str:
            if t.dtype != FLOAT:
                return t.dtype
            return op.float_types[0] if len(op.float_types) == 1 else "T"

        out += [f"## {op.name}", "", op.summary, "", f"**Semantics.** {op.semantics}", ""]
        if len(op.float_types) > 1:
            out += [
                f"**Types.** T is {op.float_types_text()}, the same for every T tensor of a node; the kernels "
                "compute in float32 (float16 inputs widened exactly, float16 outputs rounded once).",
                "",
            ]
        out += ["| input | dtype | shape | meaning |", "|---|---|---|---|"]
        out += [f"| `{t.name}` | {shown(t)} | [{', '.join(t.dims)}] | {t.doc} |" for t in op.inputs]
        out += ["", "| output | dtype | shape | meaning |", "|---|---|---|---|"]
        out += [f"| `{t.name}` | {shown(t)} | [{', '.join(t.dims)}] | {t.doc} |" for t in op.outputs]
        if op.attributes:
            out += ["", "| attribute | type | default | meaning |", "|---|---|---|---|"]
            for a in op.attributes:
                doc = f"{a.doc} ({a.bounds_text()})"
                default = "required" if a.default is None else f"`{a.default}`"
                out.append(f"| `{a.name}` | {a.type} | {default} | {doc} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Emit artefacts derived from the op catalogue.")
    parser.add_argument("what", choices=("header", "markdown"))
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    text = cpp_header() if args.what == "header" else markdown()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not args.output.exists() or args.output.read_text() != text:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
