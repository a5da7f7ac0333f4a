"""An export's backend outputs against its PyTorch reference, as a library (`bucketrt check`).

    from bucketrt.check import check
    report = check("out/yoso", backend="ort", batch_size=2, sequence_length=512)
    assert report.passed, report.to_json()
    report.components[0].outputs[0].max_abs     # per component and output: shape, errors, verdict

Both backends (ONNX Runtime, TensorRT) go through the same steps and the same verdict: random
inputs from the model's family, the backend's outputs (and, for models that hash, its hash
codes), the reference run on those codes (bucketrt.check.codes), Polygraphy's comparator on every
output. Only how a backend runs differs (`OrtBackend`, `TrtBackend`).

One comparison rule, Polygraphy's element-wise one (SimpleCompareFunc, check_error_stat
"elemwise"): an element fails when it exceeds both atol and rtol (relative to the reference), or
is NaN. Polygraphy gives the verdict and the error statistics; `mismatched_elements` counts the
elements that rule rejects, and a count that disagrees with Polygraphy's verdict is an error.

A quantized export (`bucketrt quantize`) fails that rule by design, so it is judged by criteria
that fit quantization instead (`quantized_metrics`; defaults in its manifest, from
bucketrt.quantization.CHECK_CRITERIA): per output, cosine similarity and relative L2 error; per
logits output, the share of argmax answers that agree; for generation, the share of greedy tokens
that agree; for models that hash, the share of hash codes quantization flipped. The element-wise
statistics are still reported.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bucketrt.errors import BackendRunError, BucketrtError
from bucketrt.export_format.manifest import max_sequence_length

# Default tolerances (atol, rtol) and the hash-code rounding margin, by the precision the backend
# computes in. "reduced": fp16 exports, and TensorRT engines built with TF32 or --fp16 - an fp16
# or TF32 product carries about 1e-3 relative error (10 mantissa bits), which layers accumulate.
TOLERANCES = {"fp32": (1e-4, 1e-3, 1e-4), "reduced": (1e-2, 1e-2, 1e-2), "int8": (1e-2, 1e-2, 1e-2)}

BACKENDS = ("ort", "trt")


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


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
class RoutingResult:
    """Switch: the tokens whose expert (or drop for capacity) differs between the backend and PyTorch,
    over every Top1Dispatch call (bucketrt.check.codes.RouteAudit). Informational: a flipped route
    changes the token's FFN output, which the outputs' comparison judges."""

    calls: int
    total: int
    differing: int
    complete: bool  # every captured route tensor matched one routing call, and the reverse

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


# --------------------------------------------------------------------------------------------
# the comparison rule
# --------------------------------------------------------------------------------------------


def mismatched_elements(actual, expected, atol: float, rtol: float) -> int:
    """How many elements fail Polygraphy's element-wise rule (SimpleCompareFunc, "elemwise"):
    |a - e| > atol (or NaN) and |a - e| / |e| > rtol (or NaN), where a zero e counts as
    Polygraphy's epsilon. `compare` checks that this count agrees with Polygraphy's verdict."""
    import numpy as np
    from polygraphy.comparator import util as comp_util

    a, e = comp_util.cast_up(np.asarray(actual)), comp_util.cast_up(np.asarray(expected))
    diff = np.abs(a - e)
    if e.dtype.kind == "f":
        e = np.where(e == 0, _POLYGRAPHY_ZERO_EPSILON, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.abs(e)
    bad = ((diff > atol) | np.isnan(diff)) & ((rel > rtol) | np.isnan(rel))
    return int(np.count_nonzero(bad))


# What polygraphy.comparator.compare.SimpleCompareFunc adds to zero reference values.
_POLYGRAPHY_ZERO_EPSILON = 2.220446049250313e-16


def compare(
    actual: dict, expected: dict, output_names: list[str], atol: float, rtol: float, backend_name: str = "backend"
) -> list[OutputResult]:
    """Every output in `output_names`, `actual` (the backend's) against `expected`, by Polygraphy's
    comparator; an output missing from either side fails."""
    from polygraphy.comparator import Comparator, IterationResult, RunResults
    from polygraphy.comparator.compare import SimpleCompareFunc

    results = RunResults()
    results.append((backend_name, [IterationResult(actual, 0.0, backend_name)]))
    results.append(("pytorch", [IterationResult(expected, 0.0, "pytorch")]))
    accuracy = Comparator.compare_accuracy(
        results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol, check_shapes=True, check_error_stat="elemwise")
    )
    compared = next(iter(accuracy[0].values()))[0]  # one compare func, one runner pair, one iteration
    rows = []
    for name in output_names:
        got, want, result = actual.get(name), expected.get(name), compared.get(name)
        row = OutputResult(
            name,
            list(got.shape) if got is not None else None,
            list(want.shape) if want is not None else None,
        )
        rows.append(row)
        if row.missing or result is None:
            continue
        row.size = int(got.size)
        row.passed = bool(result)
        if row.shape != row.reference_shape:  # Polygraphy fails it without statistics
            row.mismatched = row.size
            continue
        row.max_abs, row.mean_abs = result.max_absdiff, result.mean_absdiff
        row.max_rel, row.mean_rel = result.max_reldiff, result.mean_reldiff
        row.mismatched = mismatched_elements(got, want, atol, rtol)
        if (row.mismatched == 0) != row.passed:
            raise RuntimeError(
                f"{name}: {row.mismatched} elements outside atol {atol:g}/rtol {rtol:g} by bucketrt's count, "
                f"Polygraphy says {'passed' if row.passed else 'failed'}: the installed Polygraphy changed its rule"
            )
    return rows


def quantized_metrics(row: OutputResult, actual, expected, criteria: dict, mask=None) -> None:
    """Fills `row`'s cosine, rel_l2 and (for outputs named *logits) agreement, and its verdict by
    `criteria` (min_cosine, max_rel_l2, min_agreement). The answers are the argmax over the last
    axis: a class, each token's label or top-1 word, a QA start or end position. `mask` [B, N]
    (the attention mask) leaves padded positions out of per-token answers. NaN fails."""
    import numpy as np

    a, e = np.asarray(actual), np.asarray(expected)
    if a.dtype.kind != "f" or e.dtype.kind != "f":  # integer outputs are answers themselves
        row.agreement = float(np.mean(a == e)) if a.size else 1.0
        row.passed = row.agreement >= criteria["min_agreement"]
        return
    a64, e64 = a.astype(np.float64).ravel(), e.astype(np.float64).ravel()
    na, ne, nd = np.linalg.norm(a64), np.linalg.norm(e64), np.linalg.norm(a64 - e64)
    row.cosine = float(a64 @ e64 / (na * ne)) if na > 0 and ne > 0 else (1.0 if na == ne else 0.0)
    row.rel_l2 = float(nd / ne) if ne > 0 else (0.0 if nd == 0 else math.inf)
    passed = row.cosine >= criteria["min_cosine"] and row.rel_l2 <= criteria["max_rel_l2"]
    if row.name.endswith("logits") and a.ndim >= 2 and a.shape[-1] > 1:
        same = a.argmax(-1) == e.argmax(-1)
        if mask is not None and a.ndim == 3 and tuple(np.shape(mask)) == a.shape[:2]:
            same = same[np.asarray(mask) != 0]
        row.agreement = float(np.mean(same)) if same.size else 1.0
        passed = passed and row.agreement >= criteria["min_agreement"]
    row.passed = bool(passed)


class ReferenceSession:
    """A component of the PyTorch reference behind the session interface runtime.decoding drives
    (run, get_inputs, get_outputs), so that the reference generates with the same greedy loop."""

    def __init__(self, reference, entry: dict):
        from types import SimpleNamespace

        self.reference, self.entry = reference, entry
        self._inputs = [SimpleNamespace(name=spec["name"]) for spec in entry["inputs"]]
        self._outputs = [SimpleNamespace(name=spec["name"]) for spec in entry["outputs"]]

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def run(self, names, feeds):
        outputs = self.reference.run(feeds, self.entry["name"])
        return [outputs[name] for name in (names or [o.name for o in self._outputs])]


def compare_generation(manifest: dict, export_dir, reference, feeds: dict, steps: int, min_agreement: float):
    """Greedy tokens of the export in ONNX Runtime and of the reference, from the prompt `feeds`
    (the first component's inputs), through runtime.decoding's one loop; None for other tasks."""
    import numpy as np

    from bucketrt.library import ort_session
    from bucketrt.runtime import decoding

    config = manifest.get("config", {})
    entries = {e["name"]: e for e in manifest["components"]}
    eos = config.get("eos_token_id")
    pad = config.get("pad_token_id")
    if manifest["task"] == "text2text-generation" and len(entries) == 3:
        start = config.get("decoder_start_token_id")
        start = config.get("pad_token_id", 0) if start is None else start
        names = [e["name"] for e in manifest["components"]]
        kwargs = dict(decoder_start_token_id=start, eos_token_id=eos, pad_token_id=pad or 0, max_new_tokens=steps)
        ids, mask = feeds["input_ids"], feeds.get("attention_mask")
        ours = decoding.greedy_seq2seq(*(ort_session(export_dir, component=n) for n in names), ids, mask, **kwargs)
        theirs = decoding.greedy_seq2seq(*(ReferenceSession(reference, entries[n]) for n in names), ids, mask, **kwargs)
        prompt = 1
    elif manifest["task"] == "text-generation" and len(entries) == 1:
        (entry,) = entries.values()
        kwargs = dict(eos_token_id=eos, pad_token_id=pad, max_new_tokens=steps)
        ids = feeds["input_ids"]
        ours = decoding.greedy_causal(ort_session(export_dir), ids, **kwargs)
        theirs = decoding.greedy_causal(ReferenceSession(reference, entry), ids, **kwargs)
        prompt = ids.shape[1]
    else:
        return None
    # Rows may stop at different steps (end of sequence): the shorter run's tokens are compared,
    # and a token the other run did not produce counts as disagreeing.
    width = max(ours.shape[1], theirs.shape[1])
    pad_to = lambda t: np.pad(t, ((0, 0), (0, width - t.shape[1])), constant_values=-1)  # noqa: E731
    ours, theirs = pad_to(ours)[:, prompt:], pad_to(theirs)[:, prompt:]
    return GenerationResult(steps, int(ours.size), int(np.count_nonzero(ours == theirs)), min_agreement)


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------


@dataclass
class BackendRun:
    outputs: dict  # output name -> array: the model's outputs only
    codes: list | None  # the backend's hash codes in graph order; None when not captured
    note: str | None = None  # why codes were not captured although the model hashes
    seconds: float = 0.0
    routes: list | None = None  # Top1Dispatch's experts per token in graph order; None: not captured


def _code_names(model_path: Path) -> tuple[list[str], list[str]]:
    """The hash-code and routing outputs a copy of the model would add (none for models that
    neither hash nor route)."""
    import onnx

    from .codes import code_outputs, route_outputs

    proto = onnx.load(str(model_path), load_external_data=False)
    return code_outputs(proto), route_outputs(proto)


@contextlib.contextmanager
def _model_with_codes(model_path: Path, names: list[str]):
    """The path of a temporary copy of the model that also outputs `names` (its hash codes).

    A model with external data is copied beside itself, so that the data resolves; any other
    goes to the temporary folder, so that a read-only export folder can be checked."""
    import onnx

    from .codes import with_outputs

    proto = onnx.load(str(model_path), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    fd, path = tempfile.mkstemp(suffix=".onnx", prefix=".bucketrt-codes-", dir=model_path.parent if external else None)
    os.close(fd)
    try:
        onnx.save(with_outputs(proto, names), path)
        yield Path(path)
    finally:
        os.unlink(path)


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)


class OrtBackend:
    """ONNX Runtime (CPU) with bucketrt's op library; codes from a second session on a copy of the
    model that also outputs them, so that the checked model is the exported one, unchanged."""

    label, runner_name = "ONNX Runtime", "onnxruntime"

    def __init__(self, output_dir: Path, manifest: dict, console=None):
        from bucketrt.library import library_path

        library_path()  # a missing op library is a usage error, reported before any work
        self.output_dir = Path(output_dir)
        self.manifest = manifest

    def precision(self) -> tuple[str, str | None]:
        """(the TOLERANCES key, why it is reduced)."""
        if "quantization" in self.manifest:
            return "int8", f"the export is quantized ({self.manifest['quantization']['weight_type']} weights)"
        return ("reduced", "the export is fp16") if self.manifest.get("dtype") == "fp16" else ("fp32", None)

    def prepare(self, entry: dict, feeds: dict):
        return self.output_dir / entry["files"]["model"]

    def run(self, model_path: Path, entry: dict, feeds: dict) -> BackendRun:
        from polygraphy.backend.onnxrt import OnnxrtRunner

        from bucketrt.library import ort_session

        started = time.perf_counter()
        with OnnxrtRunner(lambda: ort_session(model_path), name=self.runner_name) as runner:
            outputs = dict(runner.infer(feeds))
        seconds = time.perf_counter() - started
        codes, routes = self._codes(model_path, feeds)
        return BackendRun(outputs, codes, seconds=seconds, routes=routes)

    @staticmethod
    def _codes(model_path: Path, feeds: dict) -> tuple[list | None, list | None]:
        """(hash codes, routes) from one session on a copy that outputs both; None where none."""
        import onnxruntime as ort

        from bucketrt.library import session_options

        codes, routes = _code_names(model_path)
        if not codes and not routes:
            return None, None
        with _model_with_codes(model_path, codes + routes) as path:
            session = ort.InferenceSession(
                str(path), sess_options=session_options(), providers=["CPUExecutionProvider"]
            )
        values = session.run(codes + routes, feeds)
        return (values[: len(codes)] or None), (values[len(codes) :] or None)


class TrtBackend:
    """TensorRT with bucketrt's plugins, through Polygraphy's TrtRunner.

    Runs the engine `bucketrt build` recorded for a component; otherwise (or with `rebuild`)
    builds one from the ONNX file, with TF32 off, a profile tuned for the check's shapes, and the
    hash codes as extra outputs."""

    label, runner_name = "TensorRT", "tensorrt"

    def __init__(
        self,
        output_dir: Path,
        manifest: dict,
        console=None,
        plugins: Path | None = None,
        rebuild: bool = False,
        verbose: bool = False,
    ):
        from bucketrt.trt.engine import load_tensorrt

        self.console = console
        self.output_dir = Path(output_dir)
        self.manifest = manifest
        self.rebuild = rebuild
        self.verbose = verbose
        # TensorRT and the plugin library are checked before any work (BucketrtError, one line).
        self.trt, self.library = load_tensorrt(manifest, plugins)
        _say(
            console,
            f"TensorRT {self.trt.__version__}; plugins: {self.library or 'none (the export uses no bucketrt ops)'}",
        )

    def _recorded(self, entry: dict):
        from bucketrt.trt.engine import recorded_engine

        return None if self.rebuild else recorded_engine(self.output_dir, self.manifest, entry["name"])

    def precision(self) -> tuple[str, str | None]:
        if self.manifest.get("dtype") == "fp16":
            return "reduced", "the export is fp16"
        for entry in self.manifest["components"]:
            recorded = self._recorded(entry)
            if recorded and recorded[1].get("precision", "fp32") != "fp32":
                return "reduced", f"{recorded[0].name} is a {recorded[1]['precision']} engine"
        return "fp32", None

    def prepare(self, entry: dict, feeds: dict):
        """(serialized engine, code output names, note): the recorded engine, or a fresh build."""
        from bucketrt.trt.engine import BuildOptions, build_engine, build_progress
        from bucketrt.trt.profiles import (
            ShapeRange,
            component_profiles,
            describe_profile,
            device_memory,
            format_shape,
            widen_to,
        )

        model_path = self.output_dir / entry["files"]["model"]
        recorded = self._recorded(entry)
        if recorded is not None:
            path, record = recorded
            for name, value in feeds.items():
                r = ShapeRange.from_json(record["profile"][name])
                if not r.covers(value.shape):
                    raise BucketrtError(
                        f"the engine {path.name} takes {name} from {format_shape(r.min)} to {format_shape(r.max)}, "
                        f"the check feeds {format_shape(value.shape)}",
                        "check with smaller --batch-size/--sequence-length, build with larger --max-shapes, or pass --rebuild",
                    )
            _say(self.console, f"  engine: {path} ({record.get('precision', 'fp32')}, built by `bucketrt build`)")
            note = None
            if _code_names(model_path)[0]:
                note = (
                    "the engine does not output its hash codes, so PyTorch hashed on its own: a rounding flip "
                    "shows as a mismatch (--rebuild compares on TensorRT's codes)"
                )
            return path.read_bytes(), [], note

        profile = component_profiles(self.manifest, [entry], {}, memory_budget=device_memory())[entry["name"]]
        profile = widen_to(profile, {name: value.shape for name, value in feeds.items()})
        options = BuildOptions(tf32=False, verbose=self.verbose)
        names = _code_names(model_path)[0]  # hash codes only: routes are compared on ONNX Runtime
        _say(self.console, f"  building a check engine from {model_path.name}: {describe_profile(profile)}")
        with build_progress(self.console) as (progress, echo):
            built = build_engine(
                self.trt,
                model_path,
                profile,
                options,
                self.manifest.get("dtype", "fp32"),
                progress=progress,
                echo=echo,
                extra_outputs=names,
            )
        _say(self.console, f"  [green]✓[/] engine built in {built.seconds:.1f} s ({built.precision})")
        return built.data, names, None

    def run(self, prepared, entry: dict, feeds: dict) -> BackendRun:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        from polygraphy.exception import PolygraphyException

        from bucketrt.trt.engine import console_echo, polygraphy_log, runtime

        data, code_names, note = prepared
        started = time.perf_counter()
        echo = console_echo(self.console) if self.console is not None else None
        with polygraphy_log(echo, self.verbose) as errors:
            try:
                with TrtRunner(
                    EngineFromBytes(data, runtime=lambda: runtime(self.trt)), name=self.runner_name
                ) as runner:
                    outputs = {name: _to_numpy(value) for name, value in runner.infer(feeds).items()}
            except PolygraphyException as e:  # with what TensorRT logged before (a plugin not found, say)
                raise RuntimeError("; ".join(dict.fromkeys([*errors, str(e)]))) from None
        seconds = time.perf_counter() - started
        codes = [outputs.pop(name) for name in code_names] if code_names else None
        return BackendRun(outputs, codes, note, seconds)


def _to_numpy(value):
    import numpy as np

    return value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)


# --------------------------------------------------------------------------------------------
# the check
# --------------------------------------------------------------------------------------------


def typed_feeds(entry: dict, feeds: dict) -> tuple[dict, dict]:
    """(backend feeds in the graph's input dtypes, the same values for the float32 reference)."""
    import numpy as np

    dtypes = {spec["name"]: spec.get("dtype") for spec in entry["inputs"]}
    backend, reference = {}, {}
    for name, value in feeds.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and dtypes.get(name) in ("float16", "float32"):
            value = value.astype(dtypes[name])
            reference[name] = value.astype(np.float32)
        else:
            reference[name] = value
        backend[name] = value
    return backend, reference


def check(
    export_dir,
    backend: str = "ort",
    batch_size: int = 2,
    sequence_length: int = 128,
    num_choices: int = 2,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    plugins=None,
    rebuild: bool = False,
    verbose: bool = False,
    console=None,
    on_component: Callable[[CheckReport, ComponentReport], None] | None = None,
    criteria: dict | None = None,
) -> CheckReport:
    """Runs every ONNX file of `export_dir` in `backend` ("ort" or "trt") and its PyTorch reference
    on the same random inputs, and compares every output; returns the report (`report.passed`).

    `atol`/`rtol` default by precision (TOLERANCES). A quantized export is judged by the criteria
    its manifest records (bucketrt.quantization.CHECK_CRITERIA), each overridden by `criteria`
    (min_cosine, max_rel_l2, min_agreement, generate_tokens, max_code_flips); atol/rtol then only
    count mismatched elements. `sequence_length` is clamped to the export's
    longest sequence. `plugins` and `rebuild` are for "trt": the plugin library (default: the one
    built with bucketrt), and check engines built from the ONNX files even where `bucketrt build`
    recorded engines. `console` (a rich Console) gets progress lines; `on_component` each
    component's result as it completes.

    Raises BucketrtError for usage problems (exit status 2 in the CLI), BackendRunError when the
    backend cannot run a model and BuildError when TensorRT cannot build one (1).
    """
    from polygraphy.logger import G_LOGGER

    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import load_reference, make_inputs
    from bucketrt.ops.dispatch import intercept

    from .codes import CodeSync, RouteAudit

    if backend not in BACKENDS:
        raise BucketrtError(f"unknown backend {backend!r}", f"choose one of: {', '.join(BACKENDS)}")
    if backend == "ort" and (rebuild or plugins is not None):
        raise BucketrtError(f"{'--rebuild' if rebuild else '--plugins'} applies to --backend trt only")
    for name, value in (("batch size", batch_size), ("sequence length", sequence_length), ("num choices", num_choices)):
        if value < 1:
            raise BucketrtError(f"the {name} must be at least 1, got {value}")
    manifest = read_manifest(export_dir)
    quantized = manifest.get("quantization")
    if criteria and not quantized:
        raise BucketrtError(
            f"{', '.join(sorted(criteria))} apply to quantized exports; '{export_dir}' is not one",
            "compare fp32 and fp16 exports with --atol/--rtol",
        )
    if quantized:
        from bucketrt.quantization import CHECK_CRITERIA

        unknown = sorted(set(criteria or {}) - set(CHECK_CRITERIA))
        if unknown:
            raise BucketrtError(f"unknown criteria {', '.join(unknown)}", f"choose from {', '.join(CHECK_CRITERIA)}")
        criteria = {**CHECK_CRITERIA, **quantized.get("check", {}), **(criteria or {})}
        if backend == "trt":
            raise BucketrtError(
                "TensorRT does not run ONNX Runtime's dynamic quantization (MatMulInteger, DynamicQuantizeLinear)",
                "check a quantized export with --backend ort",
            )
    limit = max_sequence_length(manifest)
    length = min(sequence_length, limit) if limit else sequence_length
    if length != sequence_length:
        _say(console, f"[yellow]sequence length {sequence_length} clamped to {limit}, the export's longest sequence[/]")

    if backend == "trt":
        runner = TrtBackend(export_dir, manifest, console, plugins, rebuild, verbose)
    else:
        runner = OrtBackend(export_dir, manifest, console)
    precision, reason = runner.precision()
    default_atol, default_rtol, margin = TOLERANCES[precision]
    if reason:
        _say(
            console,
            f"[dim]reduced precision ({reason}): default tolerances atol {default_atol:g}, rtol {default_rtol:g}[/]",
        )
    report = CheckReport(
        export_dir=str(export_dir),
        backend=backend,
        backend_label=runner.label,
        source=manifest["source"],
        task=manifest["task"],
        mode=manifest["mode"],
        seed=seed,
        batch_size=batch_size,
        sequence_length=length,
        requested_sequence_length=sequence_length,
        sequence_limit=limit,
        atol=default_atol if atol is None else atol,
        rtol=default_rtol if rtol is None else rtol,
        precision=precision,
        precision_reason=reason,
        component_names=[e["name"] for e in manifest["components"]],
        criteria=criteria,
    )
    if criteria:
        _say(
            console,
            "[dim]quantized export: each output needs cosine >= {min_cosine:g} and relative L2 error <= "
            "{max_rel_l2:g}, logits argmax agreement >= {min_agreement:g}; at most {max_code_flips:g} of the "
            "hash codes flipped[/]".format(**criteria),
        )

    with console.status("Rebuilding the PyTorch reference…") if console is not None else nullcontext():
        reference = load_reference(export_dir)
    several = len(manifest["components"]) > 1
    for entry in manifest["components"]:
        feeds = make_inputs(manifest, batch_size, length, num_choices, seed, component=entry["name"])
        feeds, reference_feeds = typed_feeds(entry, feeds)
        shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feeds.items())
        _say(
            console,
            f"Comparing {runner.label} with PyTorch{' on ' + entry['name'] if several else ''}: {shapes} (seed {seed})",
        )
        with G_LOGGER.verbosity(G_LOGGER.INFO if verbose else G_LOGGER.CRITICAL):
            prepared = runner.prepare(entry, feeds)  # may build an engine, with its own progress output
            with console.status("Running both…") if console is not None else nullcontext():
                try:
                    run = runner.run(prepared, entry, feeds)
                except Exception as e:  # a load or run failure is the model's fault, not the user's
                    text = " ".join(str(e).split())
                    raise BackendRunError(
                        f"running {entry['files']['model']} in {runner.label} failed: {text[:400]}"
                    ) from e
                sync = CodeSync(run.codes, margin=margin) if run.codes is not None else None
                routes = RouteAudit(run.routes) if run.routes is not None else None
                started = time.perf_counter()
                with intercept(sync) if sync is not None else nullcontext():
                    with intercept(routes) if routes is not None else nullcontext():
                        expected = reference.run(reference_feeds, entry["name"])
                reference_seconds = time.perf_counter() - started
                outputs = compare(
                    run.outputs,
                    expected,
                    [spec["name"] for spec in entry["outputs"]],
                    report.atol,
                    report.rtol,
                    runner.runner_name,
                )
                if criteria:
                    for row in outputs:
                        if not row.missing and row.shape == row.reference_shape:
                            mask = feeds.get("attention_mask")
                            quantized_metrics(row, run.outputs[row.name], expected[row.name], criteria, mask)
        audit = None
        if sync is not None:
            audit = HashAudit(
                code_tensors=len(sync.codes),
                hash_calls=sync.calls,
                total=sync.total,
                differing=sync.differing,
                unexplained=sync.unexplained,
                worst_margin=sync.worst_margin,
                margin=sync.margin,
                complete=sync.complete,
                max_flipped=criteria["max_code_flips"] if criteria else None,
            )
        component = ComponentReport(
            name=entry["name"],
            model=entry["files"]["model"],
            inputs={n: list(v.shape) for n, v in feeds.items()},
            outputs=outputs,
            hash_codes=audit,
            routing=None
            if routes is None
            else RoutingResult(routes.calls, routes.total, routes.differing, routes.complete),
            note=run.note if sync is None else None,
            backend_seconds=run.seconds,
            reference_seconds=reference_seconds,
        )
        report.components.append(component)
        if on_component is not None:
            on_component(report, component)
    if criteria and criteria["generate_tokens"] > 0 and manifest["task"] in ("text-generation", "text2text-generation"):
        first = manifest["components"][0]["name"]
        prompt = make_inputs(manifest, batch_size, length, num_choices, seed, padding=False, component=first)
        steps = int(criteria["generate_tokens"])
        if limit and manifest["task"] == "text-generation":  # the prompt and its continuation must fit
            prompt = {k: v[:, : max(1, min(length, limit - steps))] for k, v in prompt.items()}
        _say(console, f"Generating {steps} greedy tokens with {runner.label} and with PyTorch")
        with console.status("Generating…") if console is not None else nullcontext():
            report.generation = compare_generation(
                manifest, export_dir, reference, prompt, steps, criteria["min_agreement"]
            )
    return report


__all__ = [
    "BACKENDS",
    "BackendRunError",
    "CheckReport",
    "ComponentReport",
    "GenerationResult",
    "HashAudit",
    "OutputResult",
    "TOLERANCES",
    "check",
    "compare",
    "max_sequence_length",
    "mismatched_elements",
    "quantized_metrics",
    "typed_feeds",
]
