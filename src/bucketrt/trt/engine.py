"""TensorRT engines from bucketrt's ONNX files, through Polygraphy's TensorRT loaders.

    trt = import_tensorrt()                      # BucketrtError naming what to install
    load_plugins(trt, bucketrt.library.trt_library_path())
    built = build_engine(trt, "out/yoso/model.onnx", profile, BuildOptions(workspace_mib=4096))
    Path("out/yoso/model.engine").write_bytes(built.data)

The plugin library holds one IPluginV3 plugin per bucketrt op and is loaded into TensorRT's
plugin registry (`IPluginRegistry.load_library`, which calls its `getCreators`), as
`trtexec --dynamicPlugins` loads it. TensorRT's ONNX parser then finds each plugin by the node's
op type and its plugin_version/plugin_namespace attributes (see bucketrt.ops.schema).

TensorRT logs through Polygraphy's logger (given to TensorRT first, by `runtime`); while bucketrt
builds or loads, Polygraphy's log is collected (`polygraphy_log`), so that errors say why.

Precision: TensorRT 11 builds strongly typed networks only, so an engine computes in the types of
the ONNX graph (`bucketrt export --dtype fp16`). TensorRT 10 builds strongly typed networks here
too, unless `fp16` asks for its weakly typed mode with BuilderFlag.FP16 (TensorRT's own layers may
then run in fp16, and so may the plugins that take float16).

Two TensorRT products build engines (`PRODUCTS`): TensorRT (`tensorrt`), with bucketrt's plugins,
and TensorRT for RTX (`tensorrt_rtx`: `make trt-rtx-env`), which builds without a GPU but has no
plugin layers, so it takes standard-op exports only (`bucketrt export --ops standard`; its ONNX
parser aborts the process after creating a bucketrt plugin, so they are refused before it runs).
Polygraphy serves either, one per process (its `config.USE_TENSORRT_RTX`, read as its TensorRT
modules are imported): `import_tensorrt` selects it first.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bucketrt.errors import BucketrtError, BuildError

from .profiles import ShapeRange, describe_profile

# The oldest TensorRT with IPluginV3, which every bucketrt plugin implements.
MIN_TENSORRT_MAJOR = 10

INSTALL_HINT = (
    "pip install tensorrt (10.x or 11.x; it needs an NVIDIA GPU and driver), then rebuild bucketrt "
    "against it for its plugin library: TensorRT_ROOT=/path/to/TensorRT make install"
)


@dataclass(frozen=True)
class Product:
    """A TensorRT product that builds engines from ONNX files."""

    name: str  # as the manifest records it
    module: str  # its Python bindings
    plugins: bool  # whether its networks take plugin layers (bucketrt's ops)
    install_hint: str


# Where `make trt-rtx-env` installs TensorRT for RTX (pip install --target): beside the checkout's
# .venv, or under the current folder; $BUCKETRT_TRT_RTX_PATH names another such folder.
TRT_RTX_DIR = ".trt-rtx"
TRT_RTX_PATH_ENV = "BUCKETRT_TRT_RTX_PATH"

TENSORRT = Product("TensorRT", "tensorrt", True, INSTALL_HINT)
TENSORRT_RTX = Product(
    "TensorRT for RTX",
    "tensorrt_rtx",
    False,
    f"run `make trt-rtx-env` in a bucketrt checkout (tensorrt-rtx in {TRT_RTX_DIR}/), pip install tensorrt-rtx, "
    f"or set ${TRT_RTX_PATH_ENV} to a folder holding it",
)
PRODUCTS = {"tensorrt": TENSORRT, "rtx": TENSORRT_RTX}

# Polygraphy's modules that bind a TensorRT module when imported (polygraphy.mod.trt_importer).
_POLYGRAPHY_TRT_MODULES = ("polygraphy.backend.trt", "polygraphy.util.util", "polygraphy.datatype.tensorrt")


def product_of(trt) -> Product:
    """The product of a TensorRT module (TensorRT unless it is tensorrt_rtx)."""
    return TENSORRT_RTX if getattr(trt, "__name__", "") == TENSORRT_RTX.module else TENSORRT


def _select_polygraphy(product: Product) -> None:
    """Points Polygraphy's TensorRT loaders at `product`'s module; BucketrtError where this process
    imported them for the other product already (Polygraphy binds its module at import)."""
    from polygraphy import config

    rtx = product is TENSORRT_RTX
    if bool(config.USE_TENSORRT_RTX) == rtx:
        return
    if any(name in sys.modules for name in _POLYGRAPHY_TRT_MODULES):
        other = TENSORRT if rtx else TENSORRT_RTX
        raise BucketrtError(
            f"this process set Polygraphy up for {other.name} already, and Polygraphy serves one TensorRT "
            "product per process",
            f"use {product.name} in a process of its own (as `bucketrt build` does)",
        )
    config.USE_TENSORRT_RTX = rtx


def _trt_rtx_folders() -> list[Path]:
    override = os.environ.get(TRT_RTX_PATH_ENV)
    if override:
        return [Path(override)]
    return [Path(sys.prefix).parent / TRT_RTX_DIR, Path.cwd() / TRT_RTX_DIR]


def installed(product: Product) -> bool:
    """Whether `product`'s module can be imported (from its own folder too), without importing it."""
    import importlib.util

    if importlib.util.find_spec(product.module) is not None:
        return True
    return product is TENSORRT_RTX and any((folder / product.module).is_dir() for folder in _trt_rtx_folders())


def _import_module(product: Product):
    """The product's module, from this environment, else (TensorRT for RTX) from its own folder."""
    import importlib

    try:
        return importlib.import_module(product.module)
    except ModuleNotFoundError as e:
        if product is not TENSORRT_RTX or e.name != product.module:
            raise
    for folder in _trt_rtx_folders():
        if (folder / product.module).is_dir():
            sys.path.append(str(folder.resolve()))
            return importlib.import_module(product.module)
    raise ModuleNotFoundError(f"No module named {product.module!r}", name=product.module)


def import_tensorrt(product: Product = TENSORRT):
    """The module of `product` (`tensorrt`, or `tensorrt_rtx`), with Polygraphy set up for it;
    BucketrtError with what to install when it is missing or too old."""
    _select_polygraphy(product)
    try:
        trt = _import_module(product)
    except (ImportError, OSError) as e:  # OSError: the bindings without their libnvinfer
        missing = isinstance(e, ModuleNotFoundError) and e.name == product.module
        detail = "" if missing else f" ({' '.join(str(e).split())})"
        raise BucketrtError(f"{product.name} is not installed{detail}", product.install_hint) from None
    if product is TENSORRT and tensorrt_major(trt) < MIN_TENSORRT_MAJOR:
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


def _trt_logger():
    """Polygraphy's TensorRT logger, which forwards TensorRT's messages to Polygraphy's log."""
    from polygraphy.backend.trt import get_trt_logger

    return get_trt_logger()


@contextlib.contextmanager
def polygraphy_log(echo: Echo | None = None, verbose: bool = False):
    """Polygraphy's log (TensorRT's messages included) as records instead of lines on stdout:
    each goes to `echo` (warnings and errors; info too with `verbose`), and the error messages
    are collected in the yielded list, for BuildError and BucketrtError to say why."""
    import logging

    from polygraphy.logger import G_LOGGER

    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            level = (
                "error"
                if record.levelno >= logging.ERROR
                else "warning"
                if record.levelno >= logging.WARNING
                else "info"
            )
            if level == "error":
                errors.append(message)
            if echo is not None:
                try:
                    echo(level, message)
                except Exception:  # called from TensorRT's logger: never raise into it
                    pass

    python_logger = logging.getLogger("Polygraphy")
    saved = (
        G_LOGGER.use_python_logging_system,
        G_LOGGER.letter,
        G_LOGGER.colors,
        python_logger.propagate,
        python_logger.level,
    )
    handler = Collect()
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.letter = G_LOGGER.colors = False  # the message alone
    python_logger.propagate = False
    python_logger.setLevel(1)  # Polygraphy filters by its own severity, set below
    python_logger.addHandler(handler)
    try:
        # TensorRT's INFO is Polygraphy's VERBOSE.
        with G_LOGGER.verbosity(G_LOGGER.VERBOSE if verbose else G_LOGGER.WARNING):
            yield errors
    finally:
        python_logger.removeHandler(handler)
        G_LOGGER.use_python_logging_system, G_LOGGER.letter, G_LOGGER.colors = saved[:3]
        python_logger.propagate, _ = saved[3], python_logger.setLevel(saved[4])


# -- plugins ------------------------------------------------------------------------------------

_runtimes: dict = {}  # tensorrt module -> the runtime that gave TensorRT Polygraphy's logger
_loaded_plugins: dict = {}  # (tensorrt module, real path) -> library handle


def runtime(trt):
    """A TensorRT runtime on Polygraphy's logger, created once per process. TensorRT keeps the
    first logger it is given, so this comes before anything else TensorRT does (the plugin
    library's loading included, whose reasons TensorRT logs)."""
    if trt not in _runtimes:
        try:
            created = trt.Runtime(_trt_logger())
        except Exception as e:
            created, detail = None, " ".join(str(e).split())
        else:
            detail = ""
        if not created:
            raise BucketrtError(
                "TensorRT could not start" + (f" ({detail})" if detail else ""),
                "it needs an NVIDIA GPU with a working CUDA driver",
            )
        _runtimes[trt] = created
    return _runtimes[trt]


def load_plugins(trt, path: str) -> None:
    """Loads bucketrt's plugin library into TensorRT's registry, once per process.

    Through `IPluginRegistry.load_library` (as `trtexec --dynamicPlugins`), not Polygraphy's
    LoadPlugins: that is a plain dlopen, which cannot fail on a library TensorRT refuses (built for
    another TensorRT major, say) and would leave "Plugin not found" at parse time instead."""
    real = os.path.realpath(path)
    if (trt, real) in _loaded_plugins:
        return
    if not os.path.isfile(real):
        raise BucketrtError(f"plugin library '{path}' does not exist")
    with polygraphy_log() as errors:
        runtime(trt)
        try:
            handle = trt.get_plugin_registry().load_library(real)
        except Exception as e:  # the bindings raise for a library TensorRT refuses
            handle = None
            errors.append(" ".join(str(e).split()))
    if not handle:
        detail = "; ".join(" ".join(e.split()) for e in errors)
        raise BucketrtError(
            f"TensorRT {getattr(trt, '__version__', '?')} could not load the plugin library {real}"
            + (f" ({detail})" if detail else ""),
            "was it built against this TensorRT? rebuild it with TensorRT_ROOT pointing at this TensorRT",
        )
    _loaded_plugins[(trt, real)] = handle


def load_tensorrt(manifest: dict, plugins=None, product: Product = TENSORRT):
    """TensorRT (`product`) and bucketrt's plugin library, loaded, for an export: (trt, library
    path or None).

    Raises BucketrtError (one line) when TensorRT is missing, and TrtLibraryNotBuiltError when the
    export uses bucketrt ops and no plugin library was built or given. An export without bucketrt
    ops needs no library. A product without plugin layers (TensorRT for RTX) refuses an export with
    bucketrt ops here, naming `--ops standard`, before anything is imported.
    """
    from bucketrt.export_format.manifest import refuse_bucketrt_ops
    from bucketrt.library import trt_library_path

    if not product.plugins:
        refuse_bucketrt_ops(manifest, product.name, reason="has no plugin layers for bucketrt's ops")
        if plugins is not None:
            raise BucketrtError(f"--plugins: {product.name} has no plugin layers", "leave --plugins out")
        return import_tensorrt(product), None
    trt = import_tensorrt(product)
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
    product: str = TENSORRT.name


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
    if tensorrt_major(trt) >= 11 or not product_of(trt).plugins:
        raise BucketrtError(
            f"--fp16 does not apply to {product_of(trt).name} {trt.__version__}: networks are strongly typed and "
            "an engine computes in the ONNX graph's types",
            "export in fp16 instead: bucketrt export --dtype fp16",
        )
    if export_dtype == "fp16":
        raise BucketrtError("--fp16 is for fp32 exports; this export is fp16 already", "leave --fp16 out")


# One ONNX parser error as TensorRT's Python bindings print it (Polygraphy logs them so).
_PARSER_ERROR = re.compile(
    r"^In node (?P<node>-?\d+)(?: with name: (?P<name>.*?) and operator: (?P<op>\S*))? \((?P<func>[^)]*)\): "
    r"(?P<code>\w+): (?P<desc>.*)$",
    re.S,
)


def _parser_error_line(message: str, onnx_path: Path, nodes) -> str:
    """`model.onnx: TensorRT's ONNX parser at node 12 (SignHash 'name'): desc`, the op and name
    from the graph when the message lacks them; the plugin-library hint where a plugin was not
    found (a plugin that refused its node was found: its own error says why)."""
    match = _PARSER_ERROR.match(message.strip())
    if match is None:
        return f"{onnx_path.name}: TensorRT's ONNX parser: {' '.join(message.split())}"
    index, op, name = int(match["node"]), match["op"], match["name"]
    if index >= 0 and not op and index < len(nodes):
        op, name = nodes[index].op_type, nodes[index].name
    where = ""
    if index >= 0:
        where = f" at node {index}" + (f" ({op}" + (f" '{name}'" if name else "") + ")" if op else "")
    desc = " ".join(match["desc"].split())
    line = f"{onnx_path.name}: TensorRT's ONNX parser{where}: {desc}"
    if "plugin not found" in desc.lower():
        line += " (is bucketrt's plugin library loaded and built for this TensorRT? see `bucketrt ops --trt-library`)"
    return line


def _failure_lines(onnx_path: Path, errors: list[str], failure: str) -> list[str]:
    """BuildError's lines for a Polygraphy failure (`failure`, its critical message), from the
    errors logged before it: one per parser error, else the last error."""
    parser_errors = [e for e in errors if _PARSER_ERROR.match(e.strip())]
    if parser_errors:
        import onnx

        nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
        return [_parser_error_line(e, onnx_path, nodes) for e in parser_errors]
    others = [e for e in errors if e != failure]
    reason = " ".join((others[-1] if others else failure).split())
    if "parse" in failure.lower():
        return [f"{onnx_path.name}: TensorRT's ONNX parser failed: {reason}"]
    return [f"{onnx_path.name}: TensorRT could not build an engine: {reason}"]


class _Finish:
    """The last step of the builder config (Polygraphy's PostprocessConfig): checks the profile
    TensorRT took, and sets the timing cache TensorRT accepts. (Polygraphy's own cache loading
    ignores TensorRT refusing a cache from another GPU, and its saving merges into it.)"""

    def __init__(
        self, onnx_path: Path, profile: Mapping[str, ShapeRange], timing_cache: Path | None, echo: Echo | None
    ):
        self.onnx_path, self.profile, self.echo = onnx_path, profile, echo
        self.timing_cache = Path(timing_cache) if timing_cache is not None else None
        self.config = None
        self.save_cache = False

    def __call__(self, builder, network, config):
        self.config = config
        inputs = [network.get_input(i).name for i in range(network.num_inputs)]
        missing = [name for name in inputs if name not in self.profile]
        unknown = [name for name in self.profile if name not in inputs]
        if missing or unknown:
            raise BuildError(
                [
                    f"{self.onnx_path.name}: the profile lacks input(s) {missing} / names unknown input(s) {unknown}; "
                    f"the network's inputs are {inputs}"
                ]
            )
        if config.num_optimization_profiles < 1:  # add_optimization_profile returned -1
            raise BuildError(
                [f"{self.onnx_path.name}: TensorRT refused the optimisation profile {describe_profile(self.profile)}"]
            )
        if self.timing_cache is None:
            return
        data = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        # ignore_mismatch=False: TensorRT refuses a cache made on another GPU or TensorRT. Then the
        # build goes on with an empty cache and leaves the file alone.
        if cache is None or config.set_timing_cache(cache, False) is False:
            if self.echo is not None:
                self.echo(
                    "warning",
                    f"the timing cache {self.timing_cache} does not match this GPU or TensorRT: not used, not updated",
                )
            config.set_timing_cache(config.create_timing_cache(b""), False)
            return
        self.save_cache = True

    def save(self) -> None:
        if self.save_cache:
            _write_atomically(self.timing_cache, bytes(memoryview(self.config.get_timing_cache().serialize())))


def build_engine(
    trt,
    onnx_path,
    profile: Mapping[str, ShapeRange],
    options: BuildOptions = BuildOptions(),
    export_dtype: str = "fp32",
    progress: ProgressSink | None = None,
    echo: Echo | None = None,
    extra_outputs: tuple[str, ...] | list[str] = (),
) -> BuiltEngine:
    """Parses `onnx_path` and builds a serialized engine with one optimisation profile, through
    Polygraphy's loaders (NetworkFromOnnxPath, ModifyNetworkOutputs for `extra_outputs` - tensors
    to output besides the model's outputs -, CreateConfig, EngineBytesFromNetwork).

    The plugin library must be loaded first (`load_plugins`). Raises BucketrtError for options
    that do not apply, and, on a product without plugin layers, for a graph with bucketrt nodes
    (before its parser sees them); BuildError when TensorRT cannot parse or build the model.
    """
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        ModifyNetworkOutputs,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )
    from polygraphy.exception import PolygraphyException

    check_options(trt, options, export_dtype)
    onnx_path = Path(onnx_path)
    product = product_of(trt)
    if not product.plugins:
        refuse_bucketrt_nodes(onnx_path, product)
    started = time.perf_counter()
    strongly_typed = not options.fp16
    shapes = Profile()
    for name, r in profile.items():
        shapes.add(name, r.min, r.opt, r.max)
    finish = _Finish(onnx_path, profile, options.timing_cache, echo)
    with polygraphy_log(echo, options.verbose) as errors:
        # From the file, so that external data (NAME.onnx.data) resolves beside it. TensorRT 11 is
        # always strongly typed and deprecates the flag; so is TensorRT for RTX.
        legacy_flag = strongly_typed and product is TENSORRT and tensorrt_major(trt) < 11
        network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=legacy_flag)
        if extra_outputs:
            import onnx

            outputs = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]
            network = ModifyNetworkOutputs(network, outputs=outputs + [n for n in extra_outputs if n not in outputs])
        config = CreateConfig(
            profiles=[shapes],
            # TF32 is TensorRT's default; a TensorRT without the flag has nothing to set or clear.
            tf32=options.tf32 and hasattr(trt.BuilderFlag, "TF32"),
            fp16=options.fp16,
            memory_pool_limits=(
                {trt.MemoryPoolType.WORKSPACE: int(options.workspace_mib) << 20}
                if options.workspace_mib is not None
                else None
            ),
            progress_monitor=_progress_monitor(trt, progress) if progress is not None else None,
        )
        try:
            serialized = EngineBytesFromNetwork(network, config=PostprocessConfig(config, finish))()
        except PolygraphyException as e:
            raise BuildError(_failure_lines(onnx_path, errors, str(e))) from None
        except TypeError as e:  # the bindings' "returned nullptr": TensorRT could not create its builder
            reason = errors[-1] if errors else " ".join(str(e).split())
            raise BucketrtError(
                f"TensorRT could not create a builder ({reason})", "it needs an NVIDIA GPU with a working CUDA driver"
            ) from None
    finish.save()
    return BuiltEngine(
        data=bytes(memoryview(serialized)),
        precision=precision(options, export_dtype),
        strongly_typed=strongly_typed,
        seconds=time.perf_counter() - started,
        tensorrt_version=str(trt.__version__),
        product=product.name,
    )


def refuse_bucketrt_nodes(onnx_path: Path, product: Product) -> None:
    """BucketrtError naming `--ops standard` for a graph with bucketrt nodes: the manifest said
    none (load_tensorrt refused it otherwise), but a parser without plugin layers must never see
    one (TensorRT for RTX's aborts the process)."""
    import onnx

    from bucketrt.export_format.manifest import custom_ops, refuse_bucketrt_ops
    from bucketrt.ops.schema import DOMAIN

    graph = onnx.load(str(onnx_path), load_external_data=False)
    found = [f"{op['name']} x{op['nodes']}" for op in custom_ops(graph, DOMAIN)]
    refuse_bucketrt_ops(
        {}, product.name, found, reason="has no plugin layers for bucketrt's ops", holder=onnx_path.name
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
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=out,
                transient=True,
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


__all__ = [
    "PRODUCTS",
    "TENSORRT",
    "TENSORRT_RTX",
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
    "installed",
    "load_plugins",
    "load_tensorrt",
    "polygraphy_log",
    "precision",
    "Product",
    "product_of",
    "recorded_engine",
    "refuse_bucketrt_nodes",
    "runtime",
    "tensorrt_major",
    "write_engine",
]
