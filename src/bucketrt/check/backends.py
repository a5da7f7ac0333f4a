"""How a backend runs a component for the check: ONNX Runtime (`OrtBackend`), TensorRT (`TrtBackend`),
OpenVINO (`OpenVinoBackend`, standard-op exports only).

All hand the check the same thing (`BackendRun`: the model's outputs, and its hash codes and
routes where it can capture them), so that one check, one comparison rule and one verdict serve
both; only how a backend loads and runs a model lives here.

A component's ONNX graph is parsed once per check (`ComponentGraph`): the node check, the names
of the code and route outputs and the session that outputs them all read that one proto, and
every ONNX Runtime session is `bucketrt.library.ort_session`'s.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from bucketrt.errors import BackendRunError, BucketrtError

if TYPE_CHECKING:
    import onnx

BACKENDS = ("ort", "trt", "openvino")


@dataclass
class BackendRun:
    outputs: dict  # output name -> array: the model's outputs only
    codes: list | None  # the backend's hash codes in graph order; None when not captured
    note: str | None = None  # why codes were not captured although the model hashes
    seconds: float = 0.0
    routes: list | None = None  # Top1Dispatch's experts per token in graph order; None: not captured


@dataclass
class ComponentGraph:
    """A component's ONNX graph, parsed once (`load`): its weights in external data stay on disk."""

    path: Path
    proto: onnx.ModelProto

    @classmethod
    def load(cls, path) -> ComponentGraph:
        import onnx

        return cls(Path(path), onnx.load(str(path), load_external_data=False))

    @cached_property
    def bucketrt_ops(self) -> list[str]:
        """The graph's bucketrt ops, as "SignHash x2" (none in a standard-op export)."""
        from bucketrt.export_format.manifest import custom_ops
        from bucketrt.ops.schema import DOMAIN

        return [f"{op['name']} x{op['nodes']}" for op in custom_ops(self.proto, DOMAIN)]

    @cached_property
    def codes(self) -> list[str]:
        """The hash-code outputs a copy of the model would add (none for a model that does not hash)."""
        from .codes import code_outputs

        return code_outputs(self.proto)

    @cached_property
    def routes(self) -> list[str]:
        """The routing outputs a copy of the model would add (none for a model that does not route)."""
        from .codes import route_outputs

        return route_outputs(self.proto)

    @contextlib.contextmanager
    def with_outputs(self, names: list[str]):
        """The model that also outputs `names`, for ort_session: a ModelProto, in memory, so that a
        read-only export folder can be checked; for a model with external data, the path of a
        temporary copy beside the model, so that its data resolves."""
        import onnx

        from .codes import with_outputs

        model = with_outputs(self.proto, names)
        if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in self.proto.graph.initializer):
            yield model
            return
        fd, path = tempfile.mkstemp(suffix=".onnx", prefix=".bucketrt-codes-", dir=self.path.parent)
        os.close(fd)
        try:
            onnx.save(model, path)
            yield Path(path)
        finally:
            os.unlink(path)


def export_precision(manifest: dict) -> tuple[str, str | None]:
    """(the TOLERANCES key, why it is reduced) of a backend that computes in the export's types."""
    if "quantization" in manifest:
        return "int8", f"the export is quantized ({manifest['quantization']['weight_type']} weights)"
    return ("reduced", "the export is fp16") if manifest.get("dtype") == "fp16" else ("fp32", None)


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)


class OrtBackend:
    """ONNX Runtime (CPU) with bucketrt's op library where the graph has bucketrt nodes, and
    without it where it has none (a standard-op export: its session is a plain one); codes from a
    second session on a copy of the model that also outputs them, so that the checked model is the
    exported one, unchanged."""

    label, runner_name = "ONNX Runtime", "onnxruntime"

    def __init__(self, output_dir: Path, manifest: dict, console=None):
        from bucketrt.export_format.manifest import needs_op_library
        from bucketrt.library import library_path

        if needs_op_library(manifest):
            library_path()  # a missing op library is a usage error, reported before any work
        else:
            _say(console, "[dim]the export holds no bucketrt op: ONNX Runtime runs it without bucketrt's library[/]")
        self.output_dir = Path(output_dir)
        self.manifest = manifest

    def precision(self) -> tuple[str, str | None]:
        return export_precision(self.manifest)

    def prepare(self, entry: dict, feeds: dict):
        return self.output_dir / entry["files"]["model"]

    def run(self, model_path: Path, entry: dict, feeds: dict) -> BackendRun:
        """The graph is parsed and its nodes checked once, here, where a failure is the model's
        (BackendRunError); both sessions then skip ort_session's own node check."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        from bucketrt.library import ort_session
        from bucketrt.ops.node_check import check_nodes

        graph = ComponentGraph.load(model_path)
        check_nodes(graph.proto)
        op_library = bool(graph.bucketrt_ops)
        started = time.perf_counter()
        with OnnxrtRunner(
            lambda: ort_session(graph.path, check_attributes=False, op_library=op_library), name=self.runner_name
        ) as runner:
            outputs = dict(runner.infer(feeds))
        seconds = time.perf_counter() - started
        codes, routes = self._codes(graph, feeds)
        return BackendRun(outputs, codes, seconds=seconds, routes=routes)

    @staticmethod
    def _codes(graph: ComponentGraph, feeds: dict) -> tuple[list | None, list | None]:
        """(hash codes, routes) from one session on a copy that outputs both; None where none."""
        from bucketrt.library import ort_session

        codes, routes = graph.codes, graph.routes
        if not codes and not routes:
            return None, None
        with graph.with_outputs(codes + routes) as model:
            session = ort_session(model, check_attributes=False, op_library=True)
        values = session.run(codes + routes, feeds)
        return (values[: len(codes)] or None), (values[len(codes) :] or None)


OPENVINO_HINT = "pip install 'bucketrt[openvino]' (or openvino; `make env` installs it)"


class OpenVinoBackend:
    """OpenVINO's CPU runtime (the `openvino` package), which cannot load bucketrt's op library:
    standard-op exports only. It computes in float32 (INFERENCE_PRECISION_HINT f32): OpenVINO's
    default on CPUs with AVX512-BF16 or AMX is bfloat16, which no fp32 tolerance takes."""

    label, runner_name = "OpenVINO", "openvino"
    DEVICE = "CPU"
    CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}

    def __init__(self, output_dir: Path, manifest: dict, console=None):
        from bucketrt.export_format.manifest import refuse_bucketrt_ops

        refuse_bucketrt_ops(manifest, "OpenVINO")  # before any work, in one line
        self.core = import_openvino().Core()
        self.output_dir = Path(output_dir)
        self.manifest = manifest
        self.console = console

    def precision(self) -> tuple[str, str | None]:
        return export_precision(self.manifest)

    def prepare(self, entry: dict, feeds: dict):
        """The compiled model; the graph is checked for bucketrt nodes first (a manifest can be
        older than its graphs), since OpenVINO's reader fails on them with no word of why."""
        from bucketrt.export_format.manifest import refuse_bucketrt_ops

        model_path = self.output_dir / entry["files"]["model"]
        ops = ComponentGraph.load(model_path).bucketrt_ops
        refuse_bucketrt_ops(self.manifest, "OpenVINO", ops, holder=model_path.name)
        try:
            return self.core.compile_model(str(model_path), self.DEVICE, self.CONFIG)
        except Exception as e:  # OpenVINO's reader or compiler: the model's fault, with its words
            text = " ".join(str(e).split())
            raise BackendRunError(f"OpenVINO could not compile {model_path.name}: {text[:400]}") from None

    def run(self, compiled, entry: dict, feeds: dict) -> BackendRun:
        import numpy as np

        request = compiled.create_infer_request()
        started = time.perf_counter()
        result = request.infer(feeds)
        seconds = time.perf_counter() - started
        # The request reuses its output buffers: copies, by the ONNX output names.
        outputs = {port.get_any_name(): np.array(result[port]) for port in compiled.outputs}
        return BackendRun(outputs, None, seconds=seconds)


def import_openvino():
    """The `openvino` module; BucketrtError with what to install when it is missing."""
    try:
        import openvino
    except ImportError as e:
        detail = "" if isinstance(e, ModuleNotFoundError) and e.name == "openvino" else f" ({' '.join(str(e).split())})"
        raise BucketrtError(f"OpenVINO is not installed{detail}", OPENVINO_HINT) from None
    return openvino


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
        from bucketrt.trt.engine import TENSORRT, BuildOptions, build_engine, build_progress
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
            if record.get("product", TENSORRT.name) != TENSORRT.name:
                raise BucketrtError(
                    f"the engine {path.name} was built with {record['product']}, which this check cannot run "
                    "(it runs TensorRT engines)",
                    "pass --rebuild to check the export on a TensorRT engine built for the check",
                )
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
            if ComponentGraph.load(model_path).codes:
                note = (
                    "the engine does not output its hash codes, so PyTorch hashed on its own: a rounding flip "
                    "shows as a mismatch (--rebuild compares on TensorRT's codes)"
                )
            return path.read_bytes(), [], note

        profile = component_profiles(self.manifest, [entry], {}, memory_budget=device_memory())[entry["name"]]
        profile = widen_to(profile, {name: value.shape for name, value in feeds.items()})
        options = BuildOptions(tf32=False, verbose=self.verbose)
        names = ComponentGraph.load(model_path).codes  # hash codes only: routes are compared on ONNX Runtime
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
