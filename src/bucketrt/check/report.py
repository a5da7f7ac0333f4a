"""What a check found, as plain data: per output, per component, per export (`CheckReport`).

Apart from the check itself, so that what callers read (the CLI's tables, CI scripts, tests, the
JSON report) does not depend on how a backend ran. A component's and the export's verdicts are
properties over their parts, so a report cannot disagree with itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field


@dataclass
class OutputResult:
    """One output of one component: the backend's against the reference's."""

    name: str
    shape: list[int] | None  # the backend's; None when it is missing
    reference_shape: list[int] | None
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    mean_rel: float | None = None
    mismatched: int | None = None  # elements Polygraphy's element-wise rule rejects
    size: int | None = None
    passed: bool = False
    # Quantized exports only (None otherwise): cosine similarity and ||backend - ref|| / ||ref|| over
    # the whole tensor, and for logits outputs the share of argmax answers that agree.
    cosine: float | None = None
    rel_l2: float | None = None
    agreement: float | None = None

    @property
    def missing(self) -> bool:
        return self.shape is None or self.reference_shape is None


@dataclass
class HashAudit:
    """The backend's hash codes against PyTorch's (bucketrt.check.codes.CodeSync)."""

    code_tensors: int  # code tensors the backend produced
    hash_calls: int  # times the reference hashed
    total: int
    differing: int
    unexplained: int  # differing codes not explained by a rounding flip
    worst_margin: float
    margin: float
    complete: bool  # every captured tensor matched one hashing call, and the reverse
    # Quantized exports: the share of codes quantization may flip (`differing` counts the flips,
    # rounding or not); None: every differing code must be a rounding flip.
    max_flipped: float | None = None

    @property
    def flipped_share(self) -> float:
        return self.differing / self.total if self.total else 0.0

    @property
    def passed(self) -> bool:
        if self.max_flipped is not None:
            return self.complete and self.flipped_share <= self.max_flipped
        return self.complete and self.unexplained == 0


@dataclass
class LayerRouting:
    """One routing layer (a Top1Dispatch or TopKExperts node, in graph order): its tokens and those
    whose chosen experts differ between the backend and PyTorch."""

    layer: int  # the layer's index among the component's routing layers
    op: str  # Top1Dispatch | TopKExperts
    tokens: int
    differing: int
    # The first differing tokens as [row, position] of the component's input_ids (flat indices where
    # the layer's tokens are not input_ids' [batch, sequence]); at most 32 listed.
    differing_tokens: list = field(default_factory=list)


@dataclass
class RoutingResult:
    """The tokens whose experts differ between the backend and PyTorch (Switch: the expert or the drop
    for capacity; top-k models: the set of k experts), over every routing call and per layer
    (bucketrt.check.codes.RouteAudit). Informational: a flipped route changes the token's expert
    outputs, which the outputs' comparison judges."""

    calls: int
    total: int
    differing: int
    complete: bool  # every captured route tensor matched one routing call, and the reverse
    layers: list[LayerRouting] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.differing / self.total if self.total else 0.0


@dataclass
class GenerationResult:
    """Greedy tokens of the backend's sessions against the PyTorch reference's (quantized exports)."""

    steps: int
    tokens: int  # generated tokens compared (batch x steps)
    agreeing: int  # same token at the same position
    min_agreement: float

    @property
    def agreement(self) -> float:
        return self.agreeing / self.tokens if self.tokens else 1.0

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement


@dataclass
class ComponentReport:
    name: str
    model: str  # the ONNX file
    inputs: dict[str, list[int]]
    outputs: list[OutputResult]
    hash_codes: HashAudit | None  # None: the model does not hash, or the backend gave no codes
    note: str | None = None  # why codes were not compared although the model hashes
    backend_seconds: float = 0.0
    reference_seconds: float = 0.0
    routing: RoutingResult | None = None  # a model that routes (Switch), on ONNX Runtime

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs) and (self.hash_codes is None or self.hash_codes.passed)

    @property
    def max_abs_error(self) -> float:
        return _worst(o.max_abs for o in self.outputs)


@dataclass
class CheckReport:
    export_dir: str
    backend: str  # "ort" | "trt"
    backend_label: str  # "ONNX Runtime" | "TensorRT"
    source: str
    task: str
    mode: str
    seed: int
    batch_size: int
    sequence_length: int  # the length checked
    requested_sequence_length: int
    sequence_limit: int | None  # the export's longest sequence (None: no limit)
    atol: float
    rtol: float
    precision: str  # "fp32" | "reduced"
    precision_reason: str | None
    component_names: list[str] = field(default_factory=list)  # every component of the export, in order
    components: list[ComponentReport] = field(default_factory=list)  # those checked so far
    criteria: dict | None = None  # a quantized export: the criteria applied (else atol/rtol decide)
    generation: GenerationResult | None = None  # a quantized generation export's greedy tokens

    @property
    def clamped(self) -> bool:
        return self.sequence_length != self.requested_sequence_length

    @property
    def passed(self) -> bool:
        checked = [c.name for c in self.components] == self.component_names
        generated = self.generation is None or self.generation.passed
        return checked and generated and all(c.passed for c in self.components)

    @property
    def max_abs_error(self) -> float:
        return _worst(c.max_abs_error for c in self.components)

    def to_dict(self) -> dict:
        """Plain data (the properties included), for JSON and for tests."""
        data = asdict(self)
        data.update(passed=self.passed, clamped=self.clamped, max_abs_error=self.max_abs_error)
        if self.generation is not None:
            data["generation"].update(agreement=self.generation.agreement, passed=self.generation.passed)
        for component, entry in zip(self.components, data["components"]):
            entry.update(passed=component.passed, max_abs_error=component.max_abs_error)
            if component.routing is not None:
                entry["routing"]["share"] = component.routing.share
            if component.hash_codes is not None:
                entry["hash_codes"]["passed"] = component.hash_codes.passed
                entry["hash_codes"]["flipped_share"] = component.hash_codes.flipped_share
            for output, out_entry in zip(component.outputs, entry["outputs"]):
                out_entry["missing"] = output.missing
        return data

    def to_json(self, **kwargs) -> str:
        """JSON; non-finite numbers (a NaN error) as the strings "nan", "inf", "-inf"."""
        return json.dumps(_finite(self.to_dict()), allow_nan=False, **kwargs)


def _worst(values) -> float:
    worst = 0.0
    for value in values:
        if value is not None and not (value <= worst):  # NaN propagates
            worst = value
    return worst


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
