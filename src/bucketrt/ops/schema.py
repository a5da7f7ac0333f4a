"""The op spec's schema: what an op is (`OpSpec`), its tensors (`Tensor`) and attributes
(`Attribute`), and the rules every backend shares (attribute checks, dim binding, dtypes).

The ops themselves are in `catalogue`; the C++ header and docs/ops.md are generated from both by
`codegen`. Like them, this module imports nothing outside the standard library: CMake runs the
generator while the native library is built, in an environment that has no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DOMAIN = "bucketrt"
VERSION = 1

# Backend routing, not op semantics: TensorRT's ONNX parser maps a node it has no importer for to
# the plugin registered under the node's op type, with the version and namespace these two string
# attributes name (its defaults, "1" and "", would miss our plugins). Every emitter writes them
# (`OpSpec.node_attributes`); every validator accepts and ignores exactly these two.
PLUGIN_VERSION_ATTRIBUTE = "plugin_version"
PLUGIN_NAMESPACE_ATTRIBUTE = "plugin_namespace"
PLUGIN_NAMESPACE = DOMAIN
ROUTING_ATTRIBUTES = (PLUGIN_VERSION_ATTRIBUTE, PLUGIN_NAMESPACE_ATTRIBUTE)

# The dtype of every floating-point tensor: the op's type parameter T. All of an op's "float"
# tensors share T, which is one of the op's `float_types` (float32 first, the default). Kernels
# compute in float32 whatever T is: a float16 input is widened exactly, float32 sums are taken,
# and a float16 output is rounded once, to nearest even, at the end.
FLOAT = "float"
FLOAT_TYPES = ("float32", "float16")

# Bounds of the integer attributes. Every size a kernel derives from an attribute (products with
# the input dims, windows, table sizes) must fit int64 with margin, and no attribute may make an op
# do work out of proportion to its inputs: so every int attribute has a maximum.
#
# A size or count that indexes int32 tensors (codes, buckets, flat token indices, positions).
MAX_INT32 = 2**31 - 1
# 0/1 flags.
FLAG = (0, 1)


@dataclass(frozen=True)
class Tensor:
    """An input or output. `dims` are symbols; equal symbols must have equal sizes.

    A symbol that names an integer attribute takes that attribute's value; `expr` dims such as
    "m*L" are only checked by the op's own code (the generic checker skips them).
    """

    name: str
    dtype: str  # "int32" | "int8" | "float": the op's float type T (one of OpSpec.float_types)
    dims: tuple[str, ...]
    doc: str
    # An input that carries the routing of a mixture of experts (the router's probabilities, the
    # experts picked and their weights): what computes it stays float when the model is quantized
    # (bucketrt.quantization's router_nodes), as a flipped pick replaces a whole expert's output.
    routing: bool = False
    # Weights a decoding step reads whole, at the memory's speed, on every run (an expert's, a linear
    # layer's).
    # Where the session holds one as a constant initializer, the CPU library backs it with huge pages
    # when the kernel is made (plugins/cpu/huge_pages.h).
    weights: bool = False

    def concrete_dtype(self, float_type: str) -> str:
        """The element type of this tensor when the op's float type T is `float_type`."""
        return float_type if self.dtype == FLOAT else self.dtype


@dataclass(frozen=True)
class Attribute:
    """An attribute of an op. An int attribute has a minimum and a maximum, or allowed values
    (`allowed`, e.g. FLAG); a float attribute a finite minimum and maximum; a string attribute its
    choices. Every backend enforces exactly these (the C++ checks are generated from them:
    codegen.cpp_header)."""

    name: str
    type: str  # "int" | "float" | "string"
    doc: str
    default: int | float | str | None = None  # None: required
    choices: tuple[str, ...] = ()  # string: the allowed values
    minimum: int | float | None = None
    maximum: int | float | None = None
    allowed: tuple[int, ...] = ()  # int: the allowed values (then no minimum/maximum)
    power_of_two: bool = False

    def __post_init__(self) -> None:
        if self.type == "int":
            bounded = self.allowed or (self.minimum is not None and self.maximum is not None)
            assert bounded, f"int attribute '{self.name}' needs a minimum and a maximum, or allowed values"
            assert not (self.allowed and (self.minimum is not None or self.maximum is not None)), self.name
            assert not self.choices, self.name
        elif self.type == "float":
            bounds = (self.minimum, self.maximum)
            assert all(isinstance(b, float) and math.isfinite(b) for b in bounds), (
                f"float attribute '{self.name}' needs finite float bounds"
            )
            assert not self.choices and not self.allowed and not self.power_of_two, self.name
        else:
            assert self.type == "string" and self.choices, f"string attribute '{self.name}' needs its choices"
            assert self.minimum is None and self.maximum is None and not self.allowed, self.name
        if self.default is not None:
            assert self.check(self.default) is None, (self.name, self.default)

    def check(self, value) -> str | None:
        """What is wrong with `value` (the words after "attribute 'name' "), or None. The C++
        ResolveAttributes (plugins/cpu/validate.cc) words every case alike."""
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an int, got {value!r}"
            if self.allowed and value not in self.allowed:
                return f"must be one of {list(self.allowed)}, got {value}"
            if self.minimum is not None and value < self.minimum:
                return f"must be >= {self.minimum}, got {value}"
            if self.maximum is not None and value > self.maximum:
                return f"must be <= {self.maximum}, got {value}"
            if self.power_of_two and (value < 1 or value & (value - 1)):
                return f"must be a power of two, got {value}"
            return None
        if self.type == "float":
            # A float, not an int: an ONNX node's attribute keeps its Python type (INT or FLOAT).
            if not isinstance(value, float):
                return f"must be a float, got {value!r}"
            if not math.isfinite(value):
                return f"must be finite, got {value}"
            if value < self.minimum:
                return f"must be >= {self.minimum:g}, got {value:g}"
            if value > self.maximum:
                return f"must be <= {self.maximum:g}, got {value:g}"
            return None
        if not isinstance(value, str):
            return f"must be a string, got {value!r}"
        if value not in self.choices:
            return f"must be one of {list(self.choices)}, got {value!r}"
        return None

    def bounds_text(self) -> str:
        """The allowed values as docs/ops.md states them."""
        if self.choices:
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        if self.allowed:
            return "one of " + ", ".join(f"`{v}`" for v in self.allowed)
        if self.type == "float":
            return f"a float, {self.minimum:g} .. {self.maximum:g}"
        text = f"{self.minimum} .. {self.maximum}"
        return text + (", a power of two" if self.power_of_two else "")


@dataclass(frozen=True)
class OpSpec:
    name: str
    summary: str
    semantics: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    attributes: tuple[Attribute, ...] = field(default=())
    domain: str = DOMAIN
    version: int = VERSION
    # What T (the dtype of the "float" tensors) may be: float32 alone, or float32 and float16.
    float_types: tuple[str, ...] = ("float32",)

    def input(self, name: str) -> Tensor:
        return next(t for t in self.inputs if t.name == name)

    def attribute(self, name: str) -> Attribute:
        return next(a for a in self.attributes if a.name == name)

    def routing_attributes(self) -> dict[str, str]:
        """The attributes that route a node of this op to its TensorRT plugin (see ROUTING_ATTRIBUTES)."""
        return {PLUGIN_VERSION_ATTRIBUTE: str(self.version), PLUGIN_NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE}

    def node_attributes(self, attrs: dict) -> dict:
        """What an emitter writes on a node: the op's attributes, then the routing attributes."""
        return {**attrs, **self.routing_attributes()}

    # -- validation shared by the PyTorch reference and the exporter --------------------------

    def resolve_attributes(self, attrs: dict) -> dict:
        """Fills defaults and checks every attribute; raises ValueError naming the op.

        The routing attributes (plugin_version, plugin_namespace) are accepted and left out."""
        unknown = set(attrs) - {a.name for a in self.attributes} - set(ROUTING_ATTRIBUTES)
        if unknown:
            raise ValueError(f"{self.name}: unknown attribute(s) {sorted(unknown)}")
        out = {}
        for a in self.attributes:
            value = attrs.get(a.name, a.default)
            if value is None:
                raise ValueError(f"{self.name}: attribute '{a.name}' is required")
            problem = a.check(value)
            if problem is not None:
                raise ValueError(f"{self.name}: attribute '{a.name}' {problem}")
            out[a.name] = value
        return out

    def bind(self, shapes: list[tuple[int, ...]], dtypes: list[str], attrs: dict) -> dict[str, int]:
        """Checks input count, dtypes, ranks and symbolic dims; returns the symbol bindings.

        The same rules are generated into C++ (codegen.cpp_header), so both sides reject alike.
        """
        if len(shapes) != len(self.inputs):
            raise ValueError(f"{self.name}: expected {len(self.inputs)} inputs, got {len(shapes)}")
        env: dict[str, int] = {k: v for k, v in attrs.items() if isinstance(v, int)}
        origin: dict[str, str] = {k: f"attribute '{k}'" for k in env}
        float_type: str | None = None  # T, once the first "float" input has fixed it
        float_origin = ""
        for spec, shape, dtype in zip(self.inputs, shapes, dtypes):
            if spec.dtype == FLOAT:
                if float_type is None and dtype not in self.float_types:
                    raise ValueError(f"{self.name}: input '{spec.name}' must be {self.float_types_text()}, got {dtype}")
                if float_type is not None and dtype != float_type:
                    raise ValueError(
                        f"{self.name}: input '{spec.name}' must be {float_type} like input '{float_origin}', got {dtype}"
                    )
                if float_type is None:
                    float_type, float_origin = dtype, spec.name
            elif dtype != spec.dtype:
                raise ValueError(f"{self.name}: input '{spec.name}' must be {spec.dtype}, got {dtype}")
            if len(shape) != len(spec.dims):
                raise ValueError(
                    f"{self.name}: input '{spec.name}' must have rank {len(spec.dims)} "
                    f"[{','.join(spec.dims)}], got shape {list(shape)}"
                )
            for axis, (sym, size) in enumerate(zip(spec.dims, shape)):
                if not sym.isidentifier():
                    continue
                if size < 1:
                    raise ValueError(f"{self.name}: input '{spec.name}' dim {axis} ({sym}) must be >= 1, got {size}")
                if sym in env and env[sym] != size:
                    raise ValueError(
                        f"{self.name}: input '{spec.name}' dim {axis} ({sym}) is {size}, "
                        f"but {origin[sym]} says {sym}={env[sym]}"
                    )
                env.setdefault(sym, size)
                origin.setdefault(sym, f"input '{spec.name}'")
        return env

    def output_shapes(self, env: dict[str, int]) -> list[tuple[int, ...]]:
        return [tuple(env[d] for d in t.dims) for t in self.outputs]

    def float_types_text(self) -> str:
        """The allowed float types as error messages name them: "float32", "float32 or float16"."""
        return " or ".join(self.float_types)

    def float_type(self, dtypes: list[str]) -> str:
        """T for these input dtypes: the first "float" input's dtype when the op allows it, else
        float_types[0] (bind() reports what is wrong with the dtypes; this never raises)."""
        for spec, dtype in zip(self.inputs, dtypes):
            if spec.dtype == FLOAT:
                return dtype if dtype in self.float_types else self.float_types[0]
        return self.float_types[0]

    def output_dtypes(self, dtypes: list[str]) -> list[str]:
        """The outputs' element types for these input dtypes."""
        float_type = self.float_type(dtypes)
        return [t.concrete_dtype(float_type) for t in self.outputs]
