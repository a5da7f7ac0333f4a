"""TensorRT without TensorRT: shape profiles, `bucketrt build` and `check --backend trt`.

TensorRT needs an NVIDIA GPU and is not installed here, so these tests cover what bucketrt itself
decides: the trtexec shape syntax, the profiles, the options given to TensorRT's builder, the plugin
library loading, the manifest, the comparison, and the one-line errors when TensorRT or the plugin
library is missing. Where the commands need TensorRT, a small stand-in module records what it is
asked to do; its "engine" is the parsed ONNX file itself, which a stand-in for Polygraphy's
TrtRunner runs in ONNX Runtime. What TensorRT would compute is not tested here.
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
# a stand-in for the tensorrt module
# --------------------------------------------------------------------------------------------


def fake_tensorrt(version="10.8.0.43", parse_errors=()):
    """The few TensorRT Python API calls bucketrt makes, recorded on `trt.calls`.

    The parser reads the ONNX file (its graph inputs become the network's), and the "engine" is
    that file's bytes, so that FakeTrtRunner can run it."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch._dynamo looks it up
    trt.__version__ = version
    trt.calls = {"load_library": [], "builds": []}

    class Severity(enum.IntEnum):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity

    class IProgressMonitor:
        def __init__(self):
            pass

    trt.ILogger, trt.IProgressMonitor = ILogger, IProgressMonitor
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 5}, start=0)
    flags = {"TF32": 7} if version.startswith("11") else {"FP16": 0, "TF32": 7}  # TensorRT 11 dropped FP16
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})

    class Registry:
        def load_library(self, path):
            trt.calls["load_library"].append(path)
            return object()

    registry = Registry()
    trt.get_plugin_registry = lambda: registry

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.data = flags, [], b""

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return types.SimpleNamespace(name=self.inputs[i])

    class ParserError:
        def __init__(self, desc, node, op):
            self._desc, self._node, self._op = desc, node, op

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def node_operator(self):
            return self._op

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, [ParserError(*e) for e in parse_errors]

        def parse_from_file(self, path):
            model = onnx.load(path)
            initializers = {i.name for i in model.graph.initializer}
            self.network.inputs = [i.name for i in model.graph.input if i.name not in initializers]
            self.network.data = Path(path).read_bytes()
            self.network.outputs = [o.name for o in model.graph.output]
            return not self.errors

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+tuned"

    class Config:
        def __init__(self):
            self.flags, self.pools, self.profiles, self.cache, self.progress_monitor = set(), {}, [], None, None
            self.flags.add(trt.BuilderFlag.TF32)  # on by default, as in TensorRT

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, data):
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache.data == b"other-gpu" and not ignore_mismatch:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile(dict):
        def set_shape(self, name, low, opt, high):
            self[name] = (tuple(low), tuple(opt), tuple(high))

    class Builder:
        def __init__(self, logger):
            assert isinstance(logger, ILogger)

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.calls["builds"].append({"network": network, "config": config})
            if config.progress_monitor is not None:
                config.progress_monitor.phase_start("Building engine", None, 2)
                config.progress_monitor.step_complete("Building engine", 0)
                config.progress_monitor.step_complete("Building engine", 1)
                config.progress_monitor.phase_finish("Building engine")
            return network.data

    class Runtime:
        def __init__(self, logger):
            assert isinstance(logger, ILogger)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


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

        import bucketrt

        self.session = ort.InferenceSession(self.engine.data, sess_options=bucketrt.session_options(),
                                            providers=["CPUExecutionProvider"])
        return self

    def __exit__(self, *exc):
        return False

    def infer(self, feed_dict):
        FakeTrtRunner.ran.append({name: value.shape for name, value in feed_dict.items()})
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed_dict)))


@pytest.fixture
def trt(monkeypatch, tmp_path):
    """The stand-in TensorRT 10, an existing plugin library, and the stand-in TrtRunner."""
    import polygraphy.backend.trt as polygraphy_trt

    module = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    library = tmp_path / "libbucketrt_trt.so"
    library.write_bytes(b"")
    monkeypatch.setattr("bucketrt.trt_library_path", lambda: str(library))
    monkeypatch.setattr(polygraphy_trt, "TrtRunner", FakeTrtRunner)
    monkeypatch.setattr(polygraphy_trt, "EngineFromBytes", FakeEngineFromBytes)
    FakeTrtRunner.ran = []
    module.library = str(library)
    return module


# --------------------------------------------------------------------------------------------
# exports
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lsh_export(tmp_path_factory):
    """yoso-tiny in LSH mode: SignHash and LSHCumulation nodes, hash codes to audit."""
    out = tmp_path_factory.mktemp("trt") / "yoso"
    result = invoke("export", "--model", "yoso-tiny", out)
    assert result.exit_code == 0, result.output
    return out


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
        onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 20)]), folder / f"{name}.onnx")
        entries.append({
            "name": name,
            "files": {"model": f"{name}.onnx", "external_data": None},
            "inputs": [{"name": n, "dtype": "int64", "shape": dims} for n, dims in inputs],
            "outputs": [{"name": "out", "dtype": "int64", "shape": inputs[0][1]}],
        })
    manifest = {
        "format": 2, "family": family, "model_type": "switch_transformers", "task": "text2text-generation",
        "source": "synthetic", "seed": 0, "mode": "top1-moe", "dtype": "fp32", "max_sequence_length": None,
        "ops": [{"domain": "bucketrt", "name": "Top1Dispatch", "version": 1, "nodes": 1}] if ops else [],
        "components": entries, "config": {},
    }
    (folder / "bucketrt.json").write_text(json.dumps(manifest))
    return folder


SEQ2SEQ = {
    "encoder_model": [("input_ids", ["batch_size", "encoder_sequence_length"]),
                      ("attention_mask", ["batch_size", "encoder_sequence_length"])],
    "decoder_model": [("input_ids", ["batch_size", "decoder_sequence_length"]),
                      ("encoder_attention_mask", ["batch_size", "encoder_sequence_length"])],
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
    monkeypatch.setattr("bucketrt._TRT_LIBRARY_NAME", "libbucketrt_trt-not-built.so")
    result = invoke(*command, lsh_export)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "bucketrt's TensorRT plugin library is missing")
    assert "TensorRT_ROOT=/path/to/TensorRT make install" in result.stderr
    result = invoke(*command, lsh_export, "--plugins", tmp_path / "nowhere.so")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "does not exist")


def test_old_tensorrt_is_refused(lsh_export, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.6.1"))
    result = invoke("build", lsh_export)
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "TensorRT 8.6.1 is too old: bucketrt's plugins are IPluginV3 (TensorRT 10 or later)")


def test_ops_trt_library(monkeypatch, tmp_path):
    monkeypatch.setattr("bucketrt._TRT_LIBRARY_NAME", "libbucketrt_trt-not-built.so")
    result = invoke("ops", "--trt-library")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "TensorRT plugin library is missing")
    result = invoke("ops")
    assert result.exit_code == 0 and "TensorRT plugin library: not built" in result.stdout


# --------------------------------------------------------------------------------------------
# bucketrt build
# --------------------------------------------------------------------------------------------


def test_build_gives_tensorrt_the_profile_options_and_plugins(trt, fresh_export, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    result = invoke("build", fresh_export, "--min-shapes", "input_ids:1x16", "--opt-shapes", "input_ids:2x64",
                    "--max-shapes", "input_ids:4x256", "--workspace", 512, "--timing-cache", cache, "--no-tf32")
    assert result.exit_code == 0, result.output
    assert trt.calls["load_library"] == [trt.library]
    (build,) = trt.calls["builds"]
    config, network = build["config"], build["network"]
    # attention_mask shares input_ids' dims, so it takes the same range.
    assert config.profiles == [{
        "input_ids": ((1, 16), (2, 64), (4, 256)),
        "attention_mask": ((1, 16), (2, 64), (4, 256)),
    }]
    assert config.pools == {trt.MemoryPoolType.WORKSPACE: 512 << 20}
    assert config.flags == set()  # TF32 cleared, no FP16
    assert network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert config.cache.data == b"old" and cache.read_bytes() == b"old+tuned"  # read, then written back
    assert config.progress_monitor is not None and "✓ Building engine" in result.stdout

    engine = fresh_export / "model.engine"
    assert engine.read_bytes() == (fresh_export / "model.onnx").read_bytes()  # the stand-in's engine
    record = json.loads((fresh_export / "bucketrt.json").read_text())["engines"]["model"]
    assert record["file"] == "model.engine" and record["precision"] == "fp32" and record["strongly_typed"]
    assert record["profile"]["input_ids"] == {"min": [1, 16], "opt": [2, 64], "max": [4, 256]}
    assert record["tensorrt"] == "10.8.0.43" and record["plugins"] == trt.library and record["workspace_mib"] == 512
    assert "Built" in result.stdout and "check it with: bucketrt check" in result.stdout


def test_a_timing_cache_tensorrt_refuses_is_left_alone(trt, fresh_export, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"other-gpu")
    result = invoke("build", fresh_export, "--timing-cache", cache)
    assert result.exit_code == 0, result.output
    assert "does not match this GPU or TensorRT: not used, not updated" in result.stdout
    assert trt.calls["builds"][0]["config"].cache.data == b"" and cache.read_bytes() == b"other-gpu"


def test_build_defaults_and_fp16_on_tensorrt_10(trt, fresh_export, tmp_path):
    engine = tmp_path / "elsewhere" / "yoso.plan"
    result = invoke("build", fresh_export, "--fp16", "--engine", engine)
    assert result.exit_code == 0, result.output
    (build,) = trt.calls["builds"]
    # Defaults: batch 1..8 (opt 1), sequence 1..max length (opt 128); yoso-tiny takes 512 positions.
    assert build["config"].profiles[0]["input_ids"] == ((1, 1), (1, 128), (8, 512))
    assert build["config"].flags == {trt.BuilderFlag.FP16, trt.BuilderFlag.TF32}
    assert build["network"].flags == 0  # weakly typed: what BuilderFlag.FP16 needs
    assert build["config"].pools == {} and build["config"].cache is None
    assert engine.is_file()
    record = json.loads((fresh_export / "bucketrt.json").read_text())["engines"]["model"]
    assert record["file"] == str(engine.resolve()) and record["precision"] == "fp32+fp16" and not record["strongly_typed"]


def test_fp16_flag_is_refused_on_tensorrt_11(fresh_export, monkeypatch, tmp_path):
    module = fake_tensorrt("11.4.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    library = tmp_path / "lib.so"
    library.write_bytes(b"")
    result = invoke("build", fresh_export, "--fp16", "--plugins", library)
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "--fp16 does not apply to TensorRT 11.4.0.106: networks are strongly typed")
    assert "bucketrt export --dtype fp16" in result.stderr and module.calls["builds"] == []
    # Without it, TensorRT 11 gets no (deprecated) STRONGLY_TYPED flag: it always is.
    result = invoke("build", fresh_export, "--plugins", library)
    assert result.exit_code == 0, result.output
    assert module.calls["builds"][0]["network"].flags == 0 and module.calls["load_library"] == [str(library)]


def test_parser_errors_one_line_each(fresh_export, monkeypatch, tmp_path):
    errors = [("Plugin not found, are the plugin name, version, and namespace correct?", 12, "SignHash"),
              ("Assertion failed: something else", -1, "")]
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(parse_errors=errors))
    library = tmp_path / "lib.so"
    library.write_bytes(b"")
    result = invoke("build", fresh_export, "--plugins", library)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("Error: model.onnx: TensorRT's ONNX parser") for line in lines)
    assert "at node 12 (SignHash): Plugin not found" in lines[0] and "bucketrt ops --trt-library" in lines[0]
    assert lines[1].endswith("parser: Assertion failed: something else")
    assert not (fresh_export / "model.engine").exists()


def test_build_usage_errors(trt, fresh_export):
    result = invoke("build", fresh_export, "--max-shapes", "token_ids:1x8")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "--max-shapes names no input of the export: token_ids; its inputs are attention_mask, input_ids")
    result = invoke("build", fresh_export, "--opt-shapes", "input_ids:1x8x")
    assert result.exit_code == 2 and "needs dims like 1x128" in result.stderr
    result = invoke("build", fresh_export, "--component", "decoder_model")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "the export has no component 'decoder_model'; it has: model")
    assert trt.calls["builds"] == []


def test_build_every_component_of_a_seq2seq_export(trt, tmp_path):
    folder = synthetic_export(tmp_path / "s2s", SEQ2SEQ)
    result = invoke("build", folder, "--opt-shapes", "input_ids:2x64,attention_mask:2x32")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "inputs 'input_ids' and 'attention_mask' of encoder_model share dim 'encoder_sequence_length'")
    result = invoke("build", folder, "--max-shapes", "input_ids:2x64", "--min-shapes", "input_ids:1x1",
                    "--engine", tmp_path / "x.engine")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "--engine names one file, and the export has 2 components")

    result = invoke("build", folder, "--min-shapes", "input_ids:1x1", "--max-shapes", "input_ids:2x64")
    assert result.exit_code == 0, result.output
    encoder, decoder = (b["config"].profiles[0] for b in trt.calls["builds"])
    # input_ids is the encoder's sequence in one and the decoder's in the other: each gets the shape.
    assert encoder == {"input_ids": ((1, 1), (2, 64), (2, 64)), "attention_mask": ((1, 1), (2, 64), (2, 64))}
    assert decoder["input_ids"] == ((1, 1), (2, 64), (2, 64))
    # The decoder's encoder mask shares only batch_size with input_ids; its length takes the default.
    assert decoder["encoder_attention_mask"] == ((1, 1), (2, 128), (2, 512))
    engines = json.loads((folder / "bucketrt.json").read_text())["engines"]
    assert sorted(engines) == ["decoder_model", "encoder_model"]
    assert all((folder / e["file"]).is_file() for e in engines.values())
    assert trt.calls["load_library"] == [trt.library]  # once per process

    trt.calls["builds"].clear()
    result = invoke("build", folder, "--component", "decoder_model", "--engine", tmp_path / "decoder.plan")
    assert result.exit_code == 0, result.output
    assert len(trt.calls["builds"]) == 1 and (tmp_path / "decoder.plan").is_file()


def test_export_without_bucketrt_ops_needs_no_plugin_library(monkeypatch, tmp_path):
    module = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr("bucketrt._TRT_LIBRARY_NAME", "libbucketrt_trt-not-built.so")
    folder = synthetic_export(tmp_path / "plain", {"model": [("input_ids", ["batch_size", "sequence_length"])]},
                              family="yoso", ops=False)
    result = invoke("build", folder)
    assert result.exit_code == 0, result.output
    assert module.calls["load_library"] == [] and "plugins: none" in result.stdout


# --------------------------------------------------------------------------------------------
# bucketrt check --backend trt
# --------------------------------------------------------------------------------------------


def test_check_trt_builds_a_check_engine_with_the_hash_codes(trt, fresh_export):
    result = invoke("check", fresh_export, "--backend", "trt", "--batch-size", 3, "--sequence-length", 40)
    assert result.exit_code == 0, result.output
    (build,) = trt.calls["builds"]
    # The check engine: the check's shapes as opt, the defaults around them, TF32 off...
    assert build["config"].profiles[0]["input_ids"] == ((1, 1), (3, 40), (8, 512))
    assert trt.BuilderFlag.TF32 not in build["config"].flags
    # ... and the hash codes as extra outputs, compared code by code with PyTorch's.
    assert len(build["network"].outputs) > 1
    assert FakeTrtRunner.ran == [{"input_ids": (3, 40), "attention_mask": (3, 40)}]
    assert "Comparing TensorRT with PyTorch" in result.stdout
    assert "hash codes differ between TensorRT and PyTorch" in result.stdout
    assert "PASSED: TensorRT matches PyTorch on every output" in result.stdout
    assert "atol 0.0001, rtol 0.001" in result.stdout
    assert not any(p.name.startswith(".bucketrt-codes-") for p in fresh_export.iterdir())


def test_check_trt_runs_the_recorded_engine(trt, fresh_export):
    result = invoke("build", fresh_export, "--max-shapes", "input_ids:2x64", "--min-shapes", "input_ids:1x1")
    assert result.exit_code == 0, result.output
    trt.calls["builds"].clear()
    result = invoke("check", fresh_export, "--backend", "trt", "--batch-size", 2, "--sequence-length", 32)
    assert result.exit_code == 0, result.output
    assert trt.calls["builds"] == []  # no build: the recorded engine (TF32 on: reduced-precision tolerances)
    assert "built by `bucketrt build`" in result.stdout and "atol 0.01, rtol 0.01" in result.stdout
    assert "the engine does not output its hash codes" in result.stdout and "PASSED" in result.stdout

    result = invoke("check", fresh_export, "--backend", "trt", "--sequence-length", 100)
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "the engine model.engine takes input_ids from 1x1 to 2x64, the check feeds 2x100")
    result = invoke("check", fresh_export, "--backend", "trt", "--sequence-length", 100, "--rebuild")
    assert result.exit_code == 0, result.output
    assert len(trt.calls["builds"]) == 1 and "hash codes differ between TensorRT" in result.stdout


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


def test_ort_only_options_are_refused_for_ort(lsh_export):
    result = invoke("check", lsh_export, "--rebuild")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "--rebuild applies to --backend trt only")
