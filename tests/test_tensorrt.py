"""TensorRT without TensorRT: `bucketrt build` and `check --backend trt` over Polygraphy's loaders.

TensorRT needs an NVIDIA GPU and is not installed here, so these tests cover what bucketrt itself
decides: what Polygraphy's TensorRT loaders (NetworkFromOnnxPath, ModifyNetworkOutputs,
CreateConfig, EngineBytesFromNetwork) are given - recorders stand in for them -, the plugin
library loading through a small stand-in `tensorrt` module (TensorRT's enum values; it can
refuse), the manifest, the comparison, and the one-line errors. The recorders' "engine" is the
ONNX file with the network's outputs, which a stand-in for Polygraphy's TrtRunner runs in ONNX
Runtime. What TensorRT would compute is not tested here.
"""

from __future__ import annotations

import enum
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from bucketrt.cli.main import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error_line(stderr: str, needle: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and needle in lines[0], lines[0]


# --------------------------------------------------------------------------------------------
# stand-ins: a small `tensorrt` module, and recorders for Polygraphy's TensorRT loaders
# --------------------------------------------------------------------------------------------


class Severity(enum.IntEnum):  # TensorRT's ILogger.Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class ILogger:
    """Shared by every stand-in module: Polygraphy imports `tensorrt` once and keeps its logger."""

    Severity = Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

    def __init__(self):
        pass


class IProgressMonitor:
    def __init__(self):
        pass


def fake_tensorrt(version="10.8.0.43", refuse_library=None):
    """What bucketrt asks of `tensorrt` itself (Polygraphy's loaders do the rest): its version,
    its enums (TensorRT's values), a runtime and the plugin registry. TensorRT logs through the
    first logger a runtime is given; `refuse_library` is the reason load_library then logs before
    it fails. Calls are recorded on `trt.calls`."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch._dynamo looks it up
    trt.__version__ = version
    trt.calls = {"load_library": [], "runtimes": []}
    trt.ILogger, trt.Logger, trt.IProgressMonitor = ILogger, ILogger, IProgressMonitor
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    # TensorRT 11 dropped BuilderFlag.FP16 (strongly typed only).
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"TF32": 6} if version.startswith("11") else {"FP16": 0, "TF32": 6})

    class Runtime:
        def __init__(self, logger):
            assert isinstance(logger, ILogger)
            trt.calls["runtimes"].append(logger)

    class Registry:
        def load_library(self, path):
            trt.calls["load_library"].append(path)
            if refuse_library is None:
                return object()
            if trt.calls["runtimes"]:  # no logger given yet: TensorRT's reason is lost
                trt.calls["runtimes"][0].log(Severity.ERROR, refuse_library)
            return None

    registry = Registry()
    trt.Runtime, trt.get_plugin_registry = Runtime, lambda: registry
    return trt


class Loaders:
    """Recorders standing in for Polygraphy's NetworkFromOnnxPath, ModifyNetworkOutputs,
    CreateConfig and EngineBytesFromNetwork: `builds` holds what each build was given.

    The network's inputs and outputs are the ONNX file's, and the "engine" is the ONNX file with
    the network's outputs, which FakeTrtRunner runs in ONNX Runtime. `parse_errors` are logged as
    Polygraphy logs the parser's errors (TensorRT's bindings' text) before it fails;
    `refuse_profile` makes TensorRT's add_optimization_profile fail (no profile in the config)."""

    def __init__(self):
        self.builds: list[dict] = []
        self.parse_errors: list[str] = []
        self.refuse_profile = False
        self.cache_from_other_gpu = b"other-gpu"

    def install(self, monkeypatch):
        import polygraphy.backend.trt as polygraphy_trt

        loaders = self

        class NetworkFromOnnxPath:
            def __init__(self, path, strongly_typed=None):
                self.build = {"onnx": path, "strongly_typed": strongly_typed}
                loaders.builds.append(self.build)

            def __call__(self):
                from polygraphy.logger import G_LOGGER

                if loaders.parse_errors:
                    for error in loaders.parse_errors:
                        G_LOGGER.error(error)
                    G_LOGGER.critical("Could not parse ONNX correctly")
                model = onnx.load(self.build["onnx"])
                initializers = {i.name for i in model.graph.initializer}
                network = types.SimpleNamespace(
                    inputs=[i.name for i in model.graph.input if i.name not in initializers],
                    outputs=[o.name for o in model.graph.output],
                    model=model,
                    build=self.build,
                )
                network.num_inputs = len(network.inputs)
                network.get_input = lambda i: types.SimpleNamespace(name=network.inputs[i])
                return object(), network, object()

        class ModifyNetworkOutputs:
            def __init__(self, network, outputs=None):
                self.network, self.outputs = network, outputs

            def __call__(self):
                builder, network, parser = self.network()
                network.build["outputs"] = network.outputs = list(self.outputs)
                return builder, network, parser

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return self.data + b"+tuned"

        class Config:
            def __init__(self, profiles):
                self.num_optimization_profiles = 0 if loaders.refuse_profile else len(profiles)
                self.cache = None

            def create_timing_cache(self, data):
                return Cache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                if cache.data == loaders.cache_from_other_gpu and not ignore_mismatch:
                    return False
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class CreateConfig:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

            def __call__(self, builder, network):
                network.build["config"] = self.kwargs
                network.build["config_object"] = Config(self.kwargs["profiles"])
                return network.build["config_object"]

        class EngineBytesFromNetwork:
            def __init__(self, network, config=None):
                self.network, self.config = network, config

            def __call__(self):
                from bucketrt.check.codes import with_outputs

                builder, network, _ = self.network()
                self.config(builder, network)
                monitor = network.build["config"]["progress_monitor"]
                if monitor is not None:
                    monitor.phase_start("Building engine", None, 2)
                    monitor.step_complete("Building engine", 0)
                    monitor.step_complete("Building engine", 1)
                    monitor.phase_finish("Building engine")
                present = [o.name for o in network.model.graph.output]
                return with_outputs(network.model, [n for n in network.outputs if n not in present]).SerializeToString()

        for name, value in dict(
            NetworkFromOnnxPath=NetworkFromOnnxPath,
            ModifyNetworkOutputs=ModifyNetworkOutputs,
            CreateConfig=CreateConfig,
            EngineBytesFromNetwork=EngineBytesFromNetwork,
        ).items():
            monkeypatch.setattr(polygraphy_trt, name, value)
        return self


class FakeEngineFromBytes:
    def __init__(self, data, runtime=None):
        self.data = data
        if callable(runtime):
            runtime()


class FakeTrtRunner:
    """Polygraphy's TrtRunner in spirit: runs the "engine" (an ONNX file) and returns every output."""

    ran = []

    def __init__(self, engine, name=None):
        self.engine, self.name = engine, name

    def __enter__(self):
        import onnxruntime as ort
        from polygraphy.logger import G_LOGGER

        import bucketrt

        if self.engine.data.startswith(b"corrupt"):  # as Polygraphy fails on an engine TensorRT refuses
            G_LOGGER.error("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (plugin SignHash not found)")
            G_LOGGER.critical("Could not deserialize engine. See log for details.")
        self.session = ort.InferenceSession(
            self.engine.data, sess_options=bucketrt.session_options(), providers=["CPUExecutionProvider"]
        )
        return self

    def __exit__(self, *exc):
        return False

    def infer(self, feed_dict):
        FakeTrtRunner.ran.append({name: value.shape for name, value in feed_dict.items()})
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed_dict)))


@pytest.fixture(autouse=True)
def fresh_tensorrt_state(monkeypatch):
    """Each test starts with no plugin library loaded and no runtime created."""
    import bucketrt.trt.engine as trt_engine

    monkeypatch.setattr(trt_engine, "_loaded_plugins", {})
    monkeypatch.setattr(trt_engine, "_runtimes", {})


@pytest.fixture
def loaders(monkeypatch):
    """Recorders in place of Polygraphy's TensorRT loaders, and the stand-in TrtRunner."""
    import polygraphy.backend.trt as polygraphy_trt

    monkeypatch.setattr(polygraphy_trt, "TrtRunner", FakeTrtRunner)
    monkeypatch.setattr(polygraphy_trt, "EngineFromBytes", FakeEngineFromBytes)
    FakeTrtRunner.ran = []
    return Loaders().install(monkeypatch)


def use_tensorrt(monkeypatch, tmp_path, version="10.8.0.43", **kwargs):
    module = fake_tensorrt(version, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    module.library = tmp_path / "libbucketrt_trt.so"
    module.library.write_bytes(b"")
    monkeypatch.setattr("bucketrt.library.trt_library_path", lambda: str(module.library))
    return module


@pytest.fixture
def trt(monkeypatch, tmp_path, loaders):
    """The stand-in TensorRT 10 with an existing plugin library; the loaders' recorders as trt.loaders."""
    module = use_tensorrt(monkeypatch, tmp_path)
    module.loaders = loaders
    return module


# --------------------------------------------------------------------------------------------
# exports
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lsh_export(cli_export):
    """yoso-tiny in LSH mode: SignHash and LSHCumulation nodes, hash codes to audit (exported once
    for every file that uses it)."""
    return cli_export("--model", "yoso-tiny")


@pytest.fixture
def fresh_export(lsh_export, tmp_path):
    """A copy of the LSH export that a test may build engines into."""
    import shutil

    copy = tmp_path / "yoso"
    shutil.copytree(lsh_export, copy)
    return copy


def synthetic_export(folder: Path, components: dict[str, list[tuple]], family="switch", ops=True) -> Path:
    """An export folder whose ONNX files are Identity graphs with the given inputs
    ({component: [(name, dims)]}): enough for `build`, which reads only inputs and the manifest."""
    folder.mkdir(parents=True)
    entries = []
    for name, inputs in components.items():
        graph = helper.make_graph(
            [helper.make_node("Identity", [inputs[0][0]], ["out"])],
            name,
            [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n, dims in inputs],
            [helper.make_tensor_value_info("out", TensorProto.INT64, inputs[0][1])],
        )
        onnx.save(
            helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 20)]),
            folder / f"{name}.onnx",
        )
        entries.append(
            {
                "name": name,
                "files": {"model": f"{name}.onnx", "external_data": None},
                "inputs": [{"name": n, "dtype": "int64", "shape": dims} for n, dims in inputs],
                "outputs": [{"name": "out", "dtype": "int64", "shape": inputs[0][1]}],
            }
        )
    manifest = {
        "format": 2,
        "family": family,
        "model_type": "switch_transformers",
        "task": "text2text-generation",
        "source": "synthetic",
        "seed": 0,
        "mode": "top1-moe",
        "dtype": "fp32",
        "max_sequence_length": None,
        "ops": [{"domain": "bucketrt", "name": "Top1Dispatch", "version": 1, "nodes": 1}] if ops else [],
        "components": entries,
        "config": {},
    }
    (folder / "bucketrt.json").write_text(json.dumps(manifest))
    return folder


SEQ2SEQ = {
    "encoder_model": [
        ("input_ids", ["batch_size", "encoder_sequence_length"]),
        ("attention_mask", ["batch_size", "encoder_sequence_length"]),
    ],
    "decoder_model": [
        ("input_ids", ["batch_size", "decoder_sequence_length"]),
        ("encoder_attention_mask", ["batch_size", "encoder_sequence_length"]),
    ],
}


# --------------------------------------------------------------------------------------------
# TensorRT or its plugin library missing: exit 2, one line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["build"], ["check", "--backend", "trt"]])
def test_missing_tensorrt_is_one_line_with_what_to_install(lsh_export, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    result = invoke(*command, lsh_export)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "TensorRT is not installed; pip install tensorrt (10.x or 11.x")
    assert "TensorRT_ROOT=" in result.stderr and "Traceback" not in result.output
    assert result.stdout.strip() == ""  # reported before any work (no reference rebuilt)


@pytest.mark.parametrize("command", [["build"], ["check", "--backend", "trt"]])
def test_missing_plugin_library_is_one_line(lsh_export, monkeypatch, tmp_path, command):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr("bucketrt.library.TRT_LIBRARY_NAME", "libbucketrt_trt-not-built.so")
    result = invoke(*command, lsh_export)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "bucketrt's TensorRT plugin library is missing")
    assert "TensorRT_ROOT=/path/to/TensorRT make install" in result.stderr
    result = invoke(*command, lsh_export, "--plugins", tmp_path / "nowhere.so")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "does not exist")


def test_old_tensorrt_is_refused(lsh_export, monkeypatch, tmp_path):
    use_tensorrt(monkeypatch, tmp_path, "8.6.1")
    result = invoke("build", lsh_export)
    assert result.exit_code == 2
    assert_one_error_line(
        result.stderr, "TensorRT 8.6.1 is too old: bucketrt's plugins are IPluginV3 (TensorRT 10 or later)"
    )


def test_ops_trt_library(monkeypatch, tmp_path):
    monkeypatch.setattr("bucketrt.library.TRT_LIBRARY_NAME", "libbucketrt_trt-not-built.so")
    result = invoke("ops", "--trt-library")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "TensorRT plugin library is missing")
    result = invoke("ops")
    assert result.exit_code == 0 and "TensorRT plugin library: not built" in result.stdout


def test_a_plugin_library_tensorrt_refuses_says_why(lsh_export, monkeypatch, tmp_path):
    """TensorRT has Polygraphy's logger before load_library, so the reason it logs reaches the error."""
    trt = use_tensorrt(
        monkeypatch, tmp_path, refuse_library="bucketrt: built for TensorRT 10, running under TensorRT 11"
    )
    result = invoke("build", lsh_export)
    assert result.exit_code == 2, result.output
    assert_one_error_line(
        result.stderr,
        f"could not load the plugin library {trt.library} (bucketrt: built for TensorRT 10, running under TensorRT 11)",
    )
    assert "was it built against this TensorRT?" in result.stderr
    assert len(trt.calls["runtimes"]) == 1 and trt.calls["load_library"] == [str(trt.library)]


# --------------------------------------------------------------------------------------------
# bucketrt build: what Polygraphy's loaders are given
# --------------------------------------------------------------------------------------------


def profile_of(build: dict) -> dict:
    """The one profile CreateConfig was given, as {input: (min, opt, max)}."""
    (profile,) = build["config"]["profiles"]
    return {name: tuple(tuple(shape) for shape in shapes) for name, shapes in profile.items()}


def test_build_gives_polygraphy_the_profile_options_and_plugins(trt, fresh_export, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    result = invoke(
        "build",
        fresh_export,
        "--min-shapes",
        "input_ids:1x16",
        "--opt-shapes",
        "input_ids:2x64",
        "--max-shapes",
        "input_ids:4x256",
        "--workspace",
        512,
        "--timing-cache",
        cache,
        "--no-tf32",
    )
    assert result.exit_code == 0, result.output
    assert trt.calls["load_library"] == [str(trt.library)]
    (build,) = trt.loaders.builds
    assert build["onnx"] == str(fresh_export / "model.onnx") and build["strongly_typed"] is True
    assert "outputs" not in build  # the model's outputs, unchanged
    # attention_mask shares input_ids' dims, so it takes the same range.
    assert profile_of(build) == {
        "input_ids": ((1, 16), (2, 64), (4, 256)),
        "attention_mask": ((1, 16), (2, 64), (4, 256)),
    }
    config = build["config"]
    assert config["memory_pool_limits"] == {trt.MemoryPoolType.WORKSPACE: 512 << 20}
    assert config["tf32"] is False and config["fp16"] is False
    assert isinstance(config["progress_monitor"], trt.IProgressMonitor) and "✓ Building engine" in result.stdout
    assert build["config_object"].cache.data == b"old" and cache.read_bytes() == b"old+tuned"  # read, then written back

    engine = fresh_export / "model.engine"
    assert onnx.load_from_string(engine.read_bytes()) == onnx.load(
        str(fresh_export / "model.onnx")
    )  # the stand-in's engine
    record = json.loads((fresh_export / "bucketrt.json").read_text())["engines"]["model"]
    assert record["file"] == "model.engine" and record["precision"] == "fp32" and record["strongly_typed"]
    assert record["profile"]["input_ids"] == {"min": [1, 16], "opt": [2, 64], "max": [4, 256]}
    assert (
        record["tensorrt"] == "10.8.0.43" and record["plugins"] == str(trt.library) and record["workspace_mib"] == 512
    )
    assert "Built" in result.stdout and "check it with: bucketrt check" in result.stdout


def test_a_timing_cache_tensorrt_refuses_is_left_alone(trt, fresh_export, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"other-gpu")
    result = invoke("build", fresh_export, "--timing-cache", cache)
    assert result.exit_code == 0, result.output
    assert "does not match this GPU or TensorRT: not used, not updated" in result.stdout
    assert trt.loaders.builds[0]["config_object"].cache.data == b"" and cache.read_bytes() == b"other-gpu"


def test_build_defaults_and_fp16_on_tensorrt_10(trt, fresh_export, tmp_path):
    engine = tmp_path / "elsewhere" / "yoso.plan"
    result = invoke("build", fresh_export, "--fp16", "--engine", engine)
    assert result.exit_code == 0, result.output
    (build,) = trt.loaders.builds
    # Defaults: batch 1..8 (opt 1), sequence 1..max length (opt 128); yoso-tiny takes 512 positions.
    assert profile_of(build)["input_ids"] == ((1, 1), (1, 128), (8, 512))
    assert build["config"]["fp16"] is True and build["config"]["tf32"] is True
    assert build["strongly_typed"] is False  # weakly typed: what BuilderFlag.FP16 needs
    assert build["config"]["memory_pool_limits"] is None and build["config_object"].cache is None
    assert engine.is_file()
    record = json.loads((fresh_export / "bucketrt.json").read_text())["engines"]["model"]
    assert (
        record["file"] == str(engine.resolve()) and record["precision"] == "fp32+fp16" and not record["strongly_typed"]
    )


def test_fp16_flag_is_refused_on_tensorrt_11(fresh_export, monkeypatch, tmp_path, loaders):
    module = use_tensorrt(monkeypatch, tmp_path, "11.4.0.106")
    result = invoke("build", fresh_export, "--fp16")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "--fp16 does not apply to TensorRT 11.4.0.106: networks are strongly typed")
    assert "bucketrt export --dtype fp16" in result.stderr and loaders.builds == []
    # Without it, TensorRT 11 gets no (deprecated) strongly-typed flag: it always is.
    result = invoke("build", fresh_export)
    assert result.exit_code == 0, result.output
    assert loaders.builds[0]["strongly_typed"] is False and module.calls["load_library"] == [str(module.library)]


def sign_hash_node(export) -> tuple[int, str]:
    model = onnx.load(str(export / "model.onnx"), load_external_data=False)
    return next((i, n.name) for i, n in enumerate(model.graph.node) if n.op_type == "SignHash")


def test_parser_errors_one_line_each(trt, fresh_export):
    index, name = sign_hash_node(fresh_export)
    # As TensorRT's bindings print parser errors, and Polygraphy logs them.
    trt.loaders.parse_errors = [
        f"In node {index} (importFallbackPluginImporter): UNSUPPORTED_NODE: Assertion failed: creator && "
        '"Plugin not found, are the plugin name, version, and namespace correct?"',
        f"In node {index} (importFallbackPluginImporter): UNSUPPORTED_NODE: Could not create the plugin",
        "In node -1 (parseGraph): INVALID_GRAPH: Assertion failed: something else",
    ]
    result = invoke("build", fresh_export)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("Error: model.onnx: TensorRT's ONNX parser") for line in lines)
    # The op and node name come from the graph; the library hint only where no plugin was found.
    assert f"at node {index} (SignHash '{name}'): Assertion failed: creator && \"Plugin not found" in lines[0]
    assert "bucketrt ops --trt-library" in lines[0]
    assert lines[1].endswith(f"at node {index} (SignHash '{name}'): Could not create the plugin")
    assert lines[2].endswith("parser: Assertion failed: something else")
    assert "TensorRT error:" in result.stdout  # Polygraphy's log, shown as it comes
    assert not (fresh_export / "model.engine").exists()


def test_an_optimisation_profile_tensorrt_refuses_is_an_error(trt, fresh_export):
    trt.loaders.refuse_profile = True
    result = invoke("build", fresh_export, "--max-shapes", "input_ids:2x64")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "model.onnx: TensorRT refused the optimisation profile input_ids 2x64")
    assert not (fresh_export / "model.engine").exists()


def test_build_usage_errors(trt, fresh_export):
    result = invoke("build", fresh_export, "--max-shapes", "token_ids:1x8")
    assert result.exit_code == 2
    assert_one_error_line(
        result.stderr, "--max-shapes names no input of the export: token_ids; its inputs are attention_mask, input_ids"
    )
    result = invoke("build", fresh_export, "--opt-shapes", "input_ids:1x8x")
    assert result.exit_code == 2 and "needs dims like 1x128" in result.stderr
    result = invoke("build", fresh_export, "--component", "decoder_model")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "the export has no component 'decoder_model'; it has: model")
    assert trt.loaders.builds == []


def test_build_every_component_of_a_seq2seq_export(trt, tmp_path):
    folder = synthetic_export(tmp_path / "s2s", SEQ2SEQ)
    result = invoke("build", folder, "--opt-shapes", "input_ids:2x64,attention_mask:2x32")
    assert result.exit_code == 2
    assert_one_error_line(
        result.stderr, "inputs 'input_ids' and 'attention_mask' of encoder_model share dim 'encoder_sequence_length'"
    )
    result = invoke(
        "build",
        folder,
        "--max-shapes",
        "input_ids:2x64",
        "--min-shapes",
        "input_ids:1x1",
        "--engine",
        tmp_path / "x.engine",
    )
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "--engine names one file, and the export has 2 components")

    result = invoke("build", folder, "--min-shapes", "input_ids:1x1", "--max-shapes", "input_ids:2x64")
    assert result.exit_code == 0, result.output
    encoder, decoder = (profile_of(b) for b in trt.loaders.builds)
    # input_ids is the encoder's sequence in one and the decoder's in the other: each gets the shape.
    assert encoder == {"input_ids": ((1, 1), (2, 64), (2, 64)), "attention_mask": ((1, 1), (2, 64), (2, 64))}
    assert decoder["input_ids"] == ((1, 1), (2, 64), (2, 64))
    # The decoder's encoder mask shares only batch_size with input_ids; its length takes the default.
    assert decoder["encoder_attention_mask"] == ((1, 1), (2, 128), (2, 512))
    engines = json.loads((folder / "bucketrt.json").read_text())["engines"]
    assert sorted(engines) == ["decoder_model", "encoder_model"]
    assert all((folder / e["file"]).is_file() for e in engines.values())
    assert trt.calls["load_library"] == [str(trt.library)]  # once per process

    trt.loaders.builds.clear()
    result = invoke("build", folder, "--component", "decoder_model", "--engine", tmp_path / "decoder.plan")
    assert result.exit_code == 0, result.output
    assert len(trt.loaders.builds) == 1 and (tmp_path / "decoder.plan").is_file()


def test_export_without_bucketrt_ops_needs_no_plugin_library(monkeypatch, tmp_path, loaders):
    module = use_tensorrt(monkeypatch, tmp_path)
    monkeypatch.setattr("bucketrt.library.TRT_LIBRARY_NAME", "libbucketrt_trt-not-built.so")
    folder = synthetic_export(
        tmp_path / "plain", {"model": [("input_ids", ["batch_size", "sequence_length"])]}, family="yoso", ops=False
    )
    result = invoke("build", folder)
    assert result.exit_code == 0, result.output
    assert module.calls["load_library"] == [] and "plugins: none" in result.stdout and len(loaders.builds) == 1


# --------------------------------------------------------------------------------------------
# bucketrt check --backend trt
# --------------------------------------------------------------------------------------------


def test_check_trt_builds_a_check_engine_with_the_hash_codes(trt, fresh_export):
    from bucketrt.check.codes import code_outputs

    result = invoke("check", fresh_export, "--backend", "trt", "--batch-size", 3, "--sequence-length", 40)
    assert result.exit_code == 0, result.output
    (build,) = trt.loaders.builds
    # The check engine: the check's shapes as opt, the defaults around them, TF32 off...
    assert profile_of(build)["input_ids"] == ((1, 1), (3, 40), (8, 512))
    assert build["config"]["tf32"] is False
    # ... and the hash codes as extra outputs (ModifyNetworkOutputs), compared code by code with PyTorch's.
    codes = code_outputs(onnx.load(str(fresh_export / "model.onnx"), load_external_data=False))
    assert codes and build["outputs"] == ["last_hidden_state", *codes]
    assert FakeTrtRunner.ran == [{"input_ids": (3, 40), "attention_mask": (3, 40)}]
    assert "Comparing TensorRT with PyTorch" in result.stdout
    assert "hash codes differ between TensorRT and PyTorch" in result.stdout
    assert "PASSED: TensorRT matches PyTorch on every output" in result.stdout
    assert "atol 0.0001, rtol 0.001" in result.stdout
    assert not any(p.name.startswith(".bucketrt-codes-") for p in fresh_export.iterdir())


def test_check_trt_runs_the_recorded_engine(trt, fresh_export):
    result = invoke("build", fresh_export, "--max-shapes", "input_ids:2x64", "--min-shapes", "input_ids:1x1")
    assert result.exit_code == 0, result.output
    trt.loaders.builds.clear()
    result = invoke("check", fresh_export, "--backend", "trt", "--batch-size", 2, "--sequence-length", 32)
    assert result.exit_code == 0, result.output
    assert trt.loaders.builds == []  # no build: the recorded engine (TF32 on: reduced-precision tolerances)
    assert "built by `bucketrt build`" in result.stdout and "atol 0.01, rtol 0.01" in result.stdout
    assert "the engine does not output its hash codes" in result.stdout and "PASSED" in result.stdout

    result = invoke("check", fresh_export, "--backend", "trt", "--sequence-length", 100)
    assert result.exit_code == 2
    assert_one_error_line(
        result.stderr, "the engine model.engine takes input_ids from 1x1 to 2x64, the check feeds 2x100"
    )
    result = invoke("check", fresh_export, "--backend", "trt", "--sequence-length", 100, "--rebuild")
    assert result.exit_code == 0, result.output
    assert len(trt.loaders.builds) == 1 and "hash codes differ between TensorRT" in result.stdout


def test_check_trt_fails_like_ort_on_a_wrong_engine(trt, fresh_export):
    """The verdict is the shared one: a corrupted "engine" fails with the table and exit status 1."""
    result = invoke("build", fresh_export, "--no-tf32")
    assert result.exit_code == 0, result.output
    model = onnx.load(str(fresh_export / "model.onnx"))
    target = next(i for i in model.graph.initializer if i.name.endswith("embeddings.LayerNorm.weight"))
    array = onnx.numpy_helper.to_array(target).copy()
    array[0] += 0.05
    target.CopyFrom(onnx.numpy_helper.from_array(array, target.name))
    (fresh_export / "model.engine").write_bytes(model.SerializeToString())
    result = invoke("check", fresh_export, "--backend", "trt", "--sequence-length", 16)
    assert result.exit_code == 1
    assert "FAILED: TensorRT differs from PyTorch" in result.stdout and "mismatch" in result.stdout
    assert "atol 0.0001" in result.stdout  # an fp32 engine without TF32: the fp32 tolerances


def test_an_engine_tensorrt_cannot_load_fails_with_tensorrts_reason(trt, fresh_export):
    result = invoke("build", fresh_export, "--no-tf32")
    assert result.exit_code == 0, result.output
    (fresh_export / "model.engine").write_bytes(b"corrupt")
    result = invoke("check", fresh_export, "--backend", "trt", "--sequence-length", 16)
    assert result.exit_code == 1
    assert_one_error_line(
        result.stderr,
        "running model.onnx in TensorRT failed: IRuntime::deserializeCudaEngine: "
        "Error Code 1: Serialization (plugin SignHash not found); Could not deserialize engine",
    )


def test_ort_only_options_are_refused_for_ort(lsh_export):
    result = invoke("check", lsh_export, "--rebuild")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "--rebuild applies to --backend trt only")
