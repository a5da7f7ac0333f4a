"""What is generated from the op spec: the C++ header the native library is built with,
docs/ops.md, and the op lists of the other docs.

    PYTHONPATH=src python -m bucketrt.ops.codegen header build/generated/bucketrt/op_specs.h
    PYTHONPATH=src python -m bucketrt.ops.codegen markdown docs/ops.md
    PYTHONPATH=src python -m bucketrt.ops.codegen op-lists .

CMake runs the first while the library is built (standard library only: see `schema`); `make docs`
runs the other two, and tests keep their output current. The op lists (which ops have CUDA kernels
and TensorRT plugins, which run on the CPU alone, the CUDA kernels' files) fill the marked spans
`<!-- op-list:NAME -->...<!-- /op-list -->` of the files in `OP_LIST_FILES`, from the catalogue and
the CUDA op table (`kTable` in plugins/cuda/ops.cc, the one place that says which ops have a CUDA
kernel; `cuda_table` reads it).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import lowering_costs
from .catalogue import (
    ACTIVATION_FUNCTIONS,
    EXPERT_ACTIVATIONS,
    EXPERT_GATINGS,
    LIMITED_GATINGS,
    MAX_INT8_SUM_LENGTH,
    OPS,
)
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
        "// The most inputs an op takes (the ORT glue's per-run arrays hold that many).",
        f"inline constexpr int kMaxInputs = {max(len(op.inputs) for op in OPS)};",
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
                weights = "true" if t.weights else "false"
                rows.append(f'  {{"{t.name}", {dtype[t.dtype]}, {len(t.dims)}, {{{dims}}}, {weights}}},')
            lines += [f"inline constexpr TensorSpec k{ident}{kind}[] = {{", *rows, "};"]
        # -- attributes: AttrSpec rows, with each attribute's allowed ints beside them --
        # (a float attribute: its bounds in the last two fields, as repr() writes them, which C++
        # reads back to the same double; the int range's fields then say none)
        rows = []
        for a in op.attributes:
            is_float = a.type == "float"
            default = "nullptr" if a.default is None else f'"{a.default!r}"' if is_float else f'"{a.default}"'
            minimum = "kNoMinimum" if a.minimum is None or is_float else str(a.minimum)
            maximum = "kNoMaximum" if a.maximum is None or is_float else str(a.maximum)
            choices = "|".join(a.choices)
            allowed, num_allowed = "nullptr", 0
            if a.allowed:
                allowed, num_allowed = f"k{ident}_{a.name}_allowed", len(a.allowed)
                lines.append(f"inline constexpr long long {allowed}[] = {{{', '.join(map(str, a.allowed))}}};")
            float_bounds = f", {float(a.minimum)!r}, {float(a.maximum)!r}" if is_float else ""
            rows.append(
                f'  {{"{a.name}", AttrType::k{a.type.capitalize()}, {default}, {minimum}, {maximum}, '
                f'{str(a.power_of_two).lower()}, "{choices}", {allowed}, {num_allowed}{float_bounds}}},'
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
        "// ExpertFFN's and TopKExperts' activation functions (catalogue.py EXPERT_ACTIVATIONS); the kernels switch",
        "// over every one.",
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
    # TopKExperts' gatings: an enum, and the names onto it with whether `limit` applies.
    gatings = {g: "k" + "".join(part.capitalize() for part in g.split("_")) for g in EXPERT_GATINGS}
    lines += [
        "// TopKExperts' gating functions (catalogue.py EXPERT_GATINGS); the kernels switch over every one.",
        "enum class Gating { " + ", ".join(gatings.values()) + " };",
        f"inline constexpr int kNumGatings = {len(gatings)};",
        "struct GatingName {",
        "  const char* name;",
        "  Gating gating;",
        "  bool limited;  // catalogue.py LIMITED_GATINGS: clamps by `limit` (> 0); the others take limit 0",
        "};",
        "inline constexpr GatingName kGatingNames[] = {",
        *(f'  {{"{g}", Gating::{ident}, {str(g in LIMITED_GATINGS).lower()}}},' for g, ident in gatings.items()),
        "};",
    ]
    lines += [
        "// The int8 ops' longest sum (catalogue.py MAX_INT8_SUM_LENGTH): no exact int32 sum of as many",
        "// uint8 x int8 products can overflow.",
        f"inline constexpr long long kMaxInt8SumLength = {MAX_INT8_SUM_LENGTH};",
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
        "values, a float its range, finite, a string its choices; an int is no float). Every backend (the PyTorch reference, the exporter, the ONNX "
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
    out += ["## Standard-op lowering", "", lowering_costs.INTRO, ""]
    for op in OPS:
        if op.name in lowering_costs.COSTS:
            out += [f"### {op.name}", "", lowering_costs.COSTS[op.name], ""]
        elif op.name in lowering_costs.NOT_LOWERED:
            reason = lowering_costs.NOT_LOWERED[op.name]
            out += [f"### {op.name}", "", f"No lowering: {reason}; `--ops standard` refuses a model that calls it.", ""]
    return "\n".join(out)


# -- the op lists of the docs ------------------------------------------------------------------

# Files (from the repository root) whose op lists are generated; tests/test_op_places.py checks them.
OP_LIST_FILES = ("README.md", "docs/cuda.md", "docs/tensorrt.md", "plugins/cuda/README.md", "trt_plugins/README.md")
CUDA_TABLE = "plugins/cuda/ops.cc"
_OP_LIST = re.compile(r"(<!-- op-list:([\w-]+) -->)(.*?)(<!-- /op-list -->)", re.S)


@dataclass(frozen=True)
class CudaEntry:
    """An op's entry in the CUDA op table: whether it has data checks (their report) and a workspace
    bound of its own (else the plan's at a profile's largest shapes is the bound)."""

    op: str
    data_report: bool
    workspace_bound: bool


def cuda_table(ops_cc: str) -> list[CudaEntry]:
    """The entries of `kTable` in plugins/cuda/ops.cc (its text), in table order. Each entry is
    `{&spec::k<Op>, check, plan, launch, BUCKETRT_REPORT(ns) or BUCKETRT_NO_REPORT, bound or nullptr}`;
    tests/test_cuda_build.py checks this reading against what a build with CUDA lists."""
    match = re.search(r"constexpr Entry kTable\[\] = \{(.*?)\n\};", ops_cc, re.S)
    if match is None:
        raise ValueError(f"no `constexpr Entry kTable[] = {{...}};` in {CUDA_TABLE}")
    entries = []
    for op, fields in re.findall(r"\{&spec::k(\w+),([^{}]*)\}", match.group(1)):
        entries.append(CudaEntry(op, "BUCKETRT_REPORT(" in fields, fields.split(",")[-1].strip() != "nullptr"))
    return entries


def file_stem(op: str) -> str:
    """The files of an op's kernels: plugins/cpu/<stem>.{h,cc}, plugins/cuda/<stem>.{h,cu}
    (LSHCumulation: lsh_cumulation, ExpertFFNInt8: expert_ffn_int8)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", op).lower()


def _and(names: list[str]) -> str:
    return "none" if not names else names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def op_lists(cuda: list[CudaEntry]) -> dict[str, str]:
    """Every generated op list by name: the ops with a CUDA kernel (so with a TensorRT plugin) and
    those without, in catalogue order, as words or as code; the float32-only ops; the CUDA kernels'
    files as a table."""
    table = {e.op: e for e in cuda}
    unknown = sorted(set(table) - {op.name for op in OPS})
    if unknown:
        raise ValueError(f"{CUDA_TABLE} has entries for ops the catalogue lacks: {unknown}")
    with_kernel = [op.name for op in OPS if op.name in table]
    without = [op.name for op in OPS if op.name not in table]
    rows = [
        "",
        "",
        "| files | op | data checks | workspace over a TensorRT profile |",
        "|---|---|---|---|",
    ]
    for name in with_kernel:
        e = table[name]
        rows.append(
            f"| `{file_stem(name)}.{{h,cu}}` | {name} | "
            + ("a report (`ReportBytes`, `EnqueueReport`, `ReportError`)" if e.data_report else "none")
            + " | "
            + ("its own `WorkspaceBound`" if e.workspace_bound else "the plan at the largest shapes")
            + " |"
        )
    return {
        "cuda-ops": _and(with_kernel),
        "cuda-ops-code": _and([f"`{n}`" for n in with_kernel]),
        "cpu-only-ops": _and(without),
        "float32-only-ops": _and([op.name for op in OPS if op.float_types == ("float32",)]),
        "cuda-files": "\n".join(rows) + "\n\n",
    }


def fill_op_lists(text: str, lists: dict[str, str]) -> str:
    """`text` with every marked span holding its op list (ValueError for a name `op_lists` lacks)."""

    def fill(match: re.Match) -> str:
        if match.group(2) not in lists:
            raise ValueError(f"no op list named '{match.group(2)}' (known: {sorted(lists)})")
        return match.group(1) + lists[match.group(2)] + match.group(4)

    return _OP_LIST.sub(fill, text)


def write_op_lists(root: Path) -> None:
    lists = op_lists(cuda_table((root / CUDA_TABLE).read_text()))
    for name in OP_LIST_FILES:
        path = root / name
        text = path.read_text()
        filled = fill_op_lists(text, lists)
        if filled != text:
            path.write_text(filled)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Emit artefacts derived from the op catalogue.")
    parser.add_argument("what", choices=("header", "markdown", "op-lists"))
    parser.add_argument("output", type=Path, help="the file to write (op-lists: the repository root)")
    args = parser.parse_args(argv)
    if args.what == "op-lists":
        write_op_lists(args.output)
        return 0
    text = cpp_header() if args.what == "header" else markdown()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not args.output.exists() or args.output.read_text() != text:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
