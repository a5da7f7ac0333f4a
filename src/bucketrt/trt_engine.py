"""TensorRT engines from bucketrt's ONNX files, through TensorRT's Python API.

    trt = import_tensorrt()                      # BucketrtError naming what to install
    load_plugins(trt, bucketrt.trt_library_path())
    built = build_engine(trt, "out/yoso/model.onnx", profile, BuildOptions(workspace_mib=4096))
    Path("out/yoso/model.engine").write_bytes(built.data)

The plugin library holds one IPluginV3 plugin per bucketrt op and is loaded into TensorRT's
plugin registry (`IPluginRegistry.load_library`, which calls its `getCreators`), as
`trtexec --dynamicPlugins` loads it. TensorRT's ONNX parser then finds each plugin by the node's
op type and its plugin_version/plugin_namespace attributes (see bucketrt.ops.spec).

Precision: TensorRT 11 builds strongly typed networks only, so an engine computes in the types of
the ONNX graph (`bucketrt export --dtype fp16`). TensorRT 10 builds strongly typed networks here
too, unless `fp16` asks for its weakly typed mode with BuilderFlag.FP16 (TensorRT's own layers may
then run in fp16, and so may the plugins that take float16).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .exporter.errors import BucketrtError
from .profiles import ShapeRange

# The oldest TensorRT with IPluginV3, which every bucketrt plugin implements.
MIN_TENSORRT_MAJOR = 10

INSTALL_HINT = (
    "pip install tensorrt (10.x or 11.x; it needs an NVIDIA GPU and driver), then rebuild bucketrt "
    "against it for its plugin library: TensorRT_ROOT=/path/to/TensorRT make install"
)


class BuildError(RuntimeError):
    """TensorRT could not parse or build a model: `lines` say why, one problem per line."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


def import_tensorrt():
    """The `tensorrt` module; BucketrtError with what to install when it is missing or too old."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the bindings without their libnvinfer
        detail = "" if isinstance(e, ModuleNotFoundError) and e.name == "tensorrt" else f" ({' '.join(str(e).split())})"
        raise BucketrtError(f"TensorRT is not installed{detail}", INSTALL_HINT) from None
    if tensorrt_major(trt) < MIN_TENSORRT_MAJOR:
        raise BucketrtError(
            f"TensorRT {getattr(trt, '__version__', '?')} is too old: bucketrt's plugins are IPluginV3 "
            f"(TensorRT {MIN_TENSORRT_MAJOR} or later)",
            "pip install 'tensorrt>=10'",
        )
    return trt


def tensorrt_major(trt) -> int:
    try:
        return int(str(getattr(trt, "__version__", "0")).split(".")[0])
    except ValueError:
        return 0


# -- logging ------------------------------------------------------------------------------------

Echo = Callable[[str, str], None]  # (level: "error" | "warning" | "info", message)

_loggers: dict = {}  # tensorrt module -> its logger (tests swap the module)


def logger(trt, echo: Echo | None = None, verbose: bool = False):
    """The process's one TensorRT logger (TensorRT keeps the first it is given). It remembers the
    errors for BuildError and passes messages to `echo` (warnings and errors; info with verbose)."""
    log = _loggers.get(trt)
    if log is None:

        class BucketrtLogger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []
                self.echo: Echo | None = None
                self.verbose = False

            def log(self, severity, msg):
                levels = trt.ILogger.Severity
                if severity in (levels.INTERNAL_ERROR, levels.ERROR):
                    self.errors.append(str(msg))
                    level = "error"
                elif severity == levels.WARNING:
                    level = "warning"
                elif self.verbose:
                    level = "info"
                else:
                    return
                if self.echo is not None:
                    self.echo(level, str(msg))

        log = _loggers[trt] = BucketrtLogger()
    if echo is not None:
        log.echo, log.verbose = echo, verbose
    return log


# -- plugins ------------------------------------------------------------------------------------

_loaded_plugins: dict = {}  # (tensorrt module, real path) -> library handle


def load_plugins(trt, path: str) -> None:
    """Loads bucketrt's plugin library into TensorRT's registry, once per process."""
    real = os.path.realpath(path)
    if (trt, real) in _loaded_plugins:
        return
    if not os.path.isfile(real):
        raise BucketrtError(f"plugin library '{path}' does not exist")
    log = logger(trt)
    log.errors.clear()
    try:
        handle = trt.get_plugin_registry().load_library(real)
    except Exception as e:  # the bindings raise for a library TensorRT refuses
        handle, detail = None, " ".join(str(e).split())
    else:
        detail = log.errors[-1] if log.errors else ""
    if not handle:
        raise BucketrtError(
            f"TensorRT {getattr(trt, '__version__', '?')} could not load the plugin library {real}"
            + (f" ({detail})" if detail else ""),
            "was it built against this TensorRT? rebuild it with TensorRT_ROOT pointing at this TensorRT",
        )
    _loaded_plugins[(trt, real)] = handle


def load_tensorrt(manifest: dict, plugins=None):
    """TensorRT and bucketrt's plugin library, loaded, for an export: (trt, library path or None).

    Raises BucketrtError (one line) when TensorRT is missing, and TrtLibraryNotBuiltError when the
    export uses bucketrt ops and no plugin library was built or given. An export without bucketrt
    ops needs no library.
    """
    from . import trt_library_path

    trt = import_tensorrt()
    if plugins is None:
        if not manifest.get("ops"):
            return trt, None
        plugins = trt_library_path()
    load_plugins(trt, str(plugins))
    return trt, str(plugins)


def recorded_engine(output_dir, manifest: dict, component: str) -> tuple[Path, dict] | None:
    """The engine `bucketrt build` recorded for a component, when its file still exists."""
    record = (manifest.get("engines") or {}).get(component)
    if not record:
        return None
    path = Path(record["file"])
    path = path if path.is_absolute() else Path(output_dir) / path
    return (path, record) if path.is_file() else None


# -- building -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    workspace_mib: int | None = None  # the workspace memory pool limit; None: TensorRT's default
    timing_cache: Path | None = None  # loaded when present, written after the build
    fp16: bool = False  # TensorRT 10 only: weakly typed network with BuilderFlag.FP16
    tf32: bool = True  # TensorRT's default; off for exact fp32 comparisons
    verbose: bool = False


@dataclass(frozen=True)
class BuiltEngine:
    data: bytes
    precision: str  # "fp32", "tf32" (fp32 with TF32 matmuls), "fp16" (fp16 graph), "fp32+fp16" (--fp16)
    strongly_typed: bool
    seconds: float
    tensorrt_version: str


class ProgressSink:
    """Receives TensorRT's build phases (IProgressMonitor); the default ignores them."""

    def phase_start(self, name: str, parent: str | None, steps: int) -> None: ...

    def step_complete(self, name: str, step: int) -> None: ...

    def phase_finish(self, name: str) -> None: ...


def _progress_monitor(trt, sink: ProgressSink):
    """An IProgressMonitor forwarding to `sink`; None on TensorRT builds without one."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        # Called from TensorRT's build thread: never let an exception escape into it.
        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                sink.phase_start(phase_name, parent_phase, num_steps)
            except Exception:
                pass

        def step_complete(self, phase_name, step):
            try:
                sink.step_complete(phase_name, step)
            except Exception:
                pass
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            try:
                sink.phase_finish(phase_name)
            except Exception:
                pass

    return Monitor()


def precision(options: BuildOptions, export_dtype: str) -> str:
    if export_dtype == "fp16":
        return "fp16"
    if options.fp16:
        return "fp32+fp16"
    return "tf32" if options.tf32 else "fp32"


def check_options(trt, options: BuildOptions, export_dtype: str) -> None:
    """BucketrtError for options this TensorRT or this export cannot take."""
    if not options.fp16:
        return
    if tensorrt_major(trt) >= 11:
        raise BucketrtError(
            f"--fp16 does not apply to TensorRT {trt.__version__}: networks are strongly typed and an engine "
            "computes in the ONNX graph's types",
            "export in fp16 instead: bucketrt export --dtype fp16",
        )
    if export_dtype == "fp16":
        raise BucketrtError("--fp16 is for fp32 exports; this export is fp16 already", "leave --fp16 out")


def _parser_error_line(error, file_name: str) -> str:
    def get(name, default=None):
        method = getattr(error, name, None)
        try:
            return method() if callable(method) else default
        except Exception:
            return default

    desc = " ".join(str(get("desc", error)).split())
    node, op, node_name = get("node", -1), get("node_operator", ""), get("node_name", "")
    where = ""
    if node is not None and node >= 0:
        where = f" at node {node}" + (f" ({op}" + (f" '{node_name}'" if node_name else "") + ")" if op else "")
    line = f"{file_name}: TensorRT's ONNX parser{where}: {desc}"
    if "plugin" in desc.lower():
        line += " (is bucketrt's plugin library loaded and built for this TensorRT? see `bucketrt ops --trt-library`)"
    return line


def build_engine(
    trt,
    onnx_path,
    profile: Mapping[str, ShapeRange],
    options: BuildOptions = BuildOptions(),
    export_dtype: str = "fp32",
    progress: ProgressSink | None = None,
    echo: Echo | None = None,
) -> BuiltEngine:
    """Parses `onnx_path` and builds a serialized engine with one optimisation profile.

    The plugin library must be loaded first (`load_plugins`). Raises BucketrtError for options
    that do not apply, BuildError when TensorRT cannot parse or build the model.
    """
    check_options(trt, options, export_dtype)
    onnx_path = Path(onnx_path)
    log = logger(trt, echo, options.verbose)
    log.errors.clear()
    started = time.perf_counter()
    try:
        builder = trt.Builder(log)
    except Exception as e:
        builder, detail = None, " ".join(str(e).split())
    else:
        detail = ""
    if not builder:
        reason = log.errors[-1] if log.errors else detail
        raise BucketrtError(
            "TensorRT could not create a builder" + (f" ({reason})" if reason else ""),
            "it needs an NVIDIA GPU with a working CUDA driver",
        )

    major = tensorrt_major(trt)
    strongly_typed = not options.fp16
    flags = 0
    if strongly_typed and major < 11:  # TensorRT 11: always strongly typed, the flag is deprecated
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    # From the file, so that external data (NAME.onnx.data) resolves beside it.
    if not parser.parse_from_file(str(onnx_path)):
        lines = [_parser_error_line(parser.get_error(i), onnx_path.name) for i in range(parser.num_errors)]
        raise BuildError(lines or [f"{onnx_path.name}: TensorRT's ONNX parser failed" + (f": {log.errors[-1]}" if log.errors else "")])

    config = builder.create_builder_config()
    network_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [name for name in network_inputs if name not in profile]
    unknown = [name for name in profile if name not in network_inputs]
    if missing or unknown:
        raise BuildError(
            [f"{onnx_path.name}: the profile lacks input(s) {missing} / names unknown input(s) {unknown}; "
             f"the network's inputs are {network_inputs}"]
        )
    shapes = builder.create_optimization_profile()
    for name in network_inputs:
        r = profile[name]
        shapes.set_shape(name, r.min, r.opt, r.max)
    config.add_optimization_profile(shapes)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    save_cache = options.timing_cache is not None
    if save_cache:
        cache_path = Path(options.timing_cache)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        # ignore_mismatch=False: TensorRT refuses a cache made on another GPU or TensorRT. Then the
        # build goes on with an empty cache and leaves the file alone.
        if cache is None or config.set_timing_cache(cache, False) is False:
            if log.echo is not None:
                log.echo("warning", f"the timing cache {cache_path} does not match this GPU or TensorRT: not used, not updated")
            config.set_timing_cache(config.create_timing_cache(b""), False)
            save_cache = False
    monitor = _progress_monitor(trt, progress) if progress is not None else None
    if monitor is not None:
        config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError([f"{onnx_path.name}: TensorRT could not build an engine: " + (log.errors[-1] if log.errors else "see the log above")])
    if save_cache:
        _write_atomically(Path(options.timing_cache), bytes(memoryview(config.get_timing_cache().serialize())))
    return BuiltEngine(
        data=bytes(memoryview(serialized)),
        precision=precision(options, export_dtype),
        strongly_typed=strongly_typed,
        seconds=time.perf_counter() - started,
        tensorrt_version=str(trt.__version__),
    )


class RichBuildProgress(ProgressSink):
    """TensorRT's build phases on a rich console: live bars on a terminal; one line per top-level
    phase otherwise (and on a terminal once the phase ends)."""

    def __init__(self, out):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.out = out
        self.bars = None
        if out.is_terminal:
            self.bars = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=out, transient=True,
            )
        self.tasks: dict[str, int] = {}
        self.depth: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def __enter__(self):
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc):
        if self.bars is not None:
            self.bars.stop()

    def phase_start(self, name, parent, steps):
        depth = self.depth.get(parent, -1) + 1 if parent else 0
        self.depth[name], self.started[name] = depth, time.perf_counter()
        if self.bars is not None:
            self.tasks[name] = self.bars.add_task("  " * depth + str(name), total=steps or None)

    def step_complete(self, name, step):
        if self.bars is not None and name in self.tasks:
            self.bars.update(self.tasks[name], completed=step + 1)

    def phase_finish(self, name):
        if self.bars is not None and name in self.tasks:
            self.bars.remove_task(self.tasks.pop(name))
        if self.depth.get(name) == 0:
            seconds = time.perf_counter() - self.started.get(name, time.perf_counter())
            self.out.print(f"  [green]✓[/] {name} [dim]({seconds:.1f} s)[/]")


def console_echo(out) -> Echo:
    """TensorRT's log lines on a rich console, dimmed (stderr is for bucketrt's own error lines)."""

    def echo(level: str, message: str) -> None:
        style = {"error": "red", "warning": "yellow"}.get(level, "dim")
        out.print(f"  [{style}]TensorRT {level}:[/] {' '.join(message.split())}", markup=True, highlight=False)

    return echo


@contextlib.contextmanager
def build_progress(out):
    """(progress sink, echo) for `build_engine` on a rich console; (None, None) without one."""
    if out is None:
        yield None, None
        return
    with RichBuildProgress(out) as progress:
        yield progress, console_echo(out)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_engine(path, data: bytes) -> None:
    """Writes an engine file whole or not at all."""
    _write_atomically(Path(path), data)


def runtime(trt):
    """A TensorRT runtime on bucketrt's logger (for deserializing engines with the plugins)."""
    return trt.Runtime(logger(trt))


__all__ = [
    "BuildError",
    "BuildOptions",
    "BuiltEngine",
    "INSTALL_HINT",
    "ProgressSink",
    "RichBuildProgress",
    "build_engine",
    "build_progress",
    "check_options",
    "console_echo",
    "import_tensorrt",
    "load_plugins",
    "load_tensorrt",
    "logger",
    "precision",
    "recorded_engine",
    "runtime",
    "tensorrt_major",
    "write_engine",
]
