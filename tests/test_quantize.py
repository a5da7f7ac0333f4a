"""`bucketrt quantize` and `bucketrt check` on quantized exports: tiny YOSO (LSH), Reformer, LSG
and Switch (seq2seq) exports - every family - quantized once per module; the check's criteria, the hash-code audit,
the CLI's errors, and the benchmark plot."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from bucketrt.cli.main import main as cli
from bucketrt.ops.catalogue import LINEAR_INT8
from bucketrt.ops.schema import DOMAIN

SIZES = dict(batch_size=2, sequence_length=48)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{name: (fp32 folder, int8 folder)}; yoso quantized through the CLI, the others the library."""
    from bucketrt.exporter import export
    from bucketrt.quantization import quantize

    root = tmp_path_factory.mktemp("quantize")
    folders = {}
    for name, preset, overrides in (
        ("yoso", "yoso-tiny", {"use_expectation": False}),
        ("reformer", "reformer-tiny", {}),
        ("lsg", "lsg-bert-tiny", {}),
        ("switch", "switch-tiny", {}),
    ):
        export(preset, root / name, config_overrides=overrides)
        folders[name] = (root / name, root / f"{name}-int8")
    result = CliRunner().invoke(cli, ["quantize", str(folders["yoso"][0]), str(folders["yoso"][1])])
    assert result.exit_code == 0, result.output
    assert "Quantized" in result.output
    for name in ("reformer", "lsg", "switch"):
        quantize(*folders[name])
    return folders


def _manifest(folder):
    return json.loads((folder / "bucketrt.json").read_text())


def _models(folder):
    return {e["name"]: onnx.load(str(folder / e["files"]["model"])) for e in _manifest(folder)["components"]}


def test_manifest_records_the_quantization(exports):
    for source, target in exports.values():
        before, after = _manifest(source), _manifest(target)
        q = after["quantization"]
        assert q["method"] == "onnxruntime.quantization.quantize_dynamic"
        assert (q["weight_type"], q["per_channel"], q["exclude"]) == ("int8", True, [])
        assert q["source"]["path"] == str(source.resolve())
        assert q["source"]["manifest_sha256"] == hashlib.sha256((source / "bucketrt.json").read_bytes()).hexdigest()
        assert q["versions"]["onnxruntime"] and q["check"]["min_cosine"] == 0.99
        # Everything that rebuilds the reference is the source's, and bucketrt's ops are unchanged.
        for key in ("family", "source", "seed", "task", "mode", "weights_sha256", "patch_sha256"):
            assert after[key] == before[key], key
        # bucketrt's ops are the source's, but for ExpertFFN where the int8 expert op replaced it,
        # and LinearInt8 for the linear layers of the components that decode with a cache.
        experts = (q["experts"] or {}).get("quantized")
        rename = {"ExpertFFN": "ExpertFFNInt8"} if experts else {}
        ops = lambda m: {rename.get(o["name"], o["name"]): o["nodes"] for o in m["ops"]}  # noqa: E731
        models = _models(target)
        linear = sum(n.op_type == LINEAR_INT8.name for model in models.values() for n in model.graph.node)
        assert ops(after) == ops(before) | ({LINEAR_INT8.name: linear} if linear else {})
        assert [c["name"] for c in after["components"]] == [c["name"] for c in before["components"]]
        for component, model in models.items():
            record = q["components"][component]
            integer = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
            # The layers in LinearInt8 nodes (those that read one input share one: "q+k+v").
            own = [layer for n in model.graph.node if n.op_type == LINEAR_INT8.name for layer in n.name.split("+")]
            assert sorted(record["linear_int8_nodes"]) == sorted(own)
            assert q["linear_int8"]["components"].count(component) == bool(own)
            # A component with a key/value cache: Switch's decoder_with_past.
            assert bool(own) == (component == "decoder_with_past_model")
            assert record["quantized_nodes"] == len(integer) + len(own) > 0
            assert record["left_float_by_onnxruntime"] == []
        assert q["reduce_range"] is True
        # Dynamic quantization scales activations over the whole batch: a server runs rows alone.
        assert after["batch_rows_independent"] is False
    switch = _manifest(exports["switch"][1])["quantization"]
    # One router per component (one sparse layer each), kept float; experts float without the int8 op.
    assert [len(c["router_nodes"]) for c in switch["components"].values()] == [1, 1, 1]
    expert_nodes = [len(c["expert_nodes"]) for c in switch["components"].values()]
    assert expert_nodes == ([1, 1, 1] if switch["experts"]["quantized"] else [0, 0, 0])
    assert _manifest(exports["yoso"][1])["quantization"]["experts"] is None


def test_bucketrt_nodes_stay_float_and_unchanged(exports):
    for name, (source, target) in exports.items():
        sources, targets = _models(source), _models(target)
        for component, model in targets.items():
            expert_nodes = set(_manifest(target)["quantization"]["components"][component]["expert_nodes"])
            original = {n.name: n for n in sources[component].graph.node if n.domain == DOMAIN}
            # (LinearInt8 nodes take the place of MatMul ones: tests/test_linear_int8.py.)
            ours = {n.name: n for n in model.graph.node if n.domain == DOMAIN and n.op_type != LINEAR_INT8.name}
            # LSG's attention is standard ONNX ops: it has no bucketrt node to keep.
            assert set(ours) == set(original) and (bool(ours) != (name == "lsg"))
            weights = {i.name: i for i in model.graph.initializer}
            for node_name, node in ours.items():
                if node_name in expert_nodes:
                    continue
                assert node == original[node_name], f"{name}/{component}: {node_name} changed"
                for tensor in node.input:
                    if tensor in weights and weights[tensor].data_type in (
                        onnx.TensorProto.INT8,
                        onnx.TensorProto.UINT8,
                    ):
                        pytest.fail(f"{name}/{component}: {node_name} takes quantized {tensor}")
            routers = _manifest(target)["quantization"]["components"][component]["router_nodes"]
            assert {n.name for n in model.graph.node if n.op_type == "MatMul"} >= set(routers)


@pytest.fixture(scope="module")
def reports(exports):
    from bucketrt.check import check

    out = {name: check(exports[name][1], **SIZES) for name in ("yoso", "reformer", "lsg")}
    # Switch at the check's default length: at 2x48, two of the encoder's 96 tokens have router
    # probabilities tied to 0.0025, which any int8 error flips (docs/switch_transformers.md).
    out["switch"] = check(exports["switch"][1], batch_size=2, sequence_length=128)
    return out


def test_quantized_check_passes_with_default_criteria(reports):
    # switch-tiny missed them while the linear layers had full-range int8 weights (saturated in ORT's
    # AVX2 kernel: quantization.quantize.REDUCE_RANGE: decoder logits rel L2 0.21, 8 of 16 greedy
    # tokens); every component is held to them.
    for report in reports.values():
        assert report.passed, report.to_json()
        assert report.precision == "int8" and report.criteria["min_cosine"] == 0.99
        for row in report.components[0].outputs:
            assert row.cosine >= 0.99 and row.rel_l2 <= 0.1
            assert row.rel_l2 > 0  # int8 weights: not the fp32 numbers
    logits = reports["reformer"].components[0].outputs[0]
    assert logits.name == "logits" and logits.agreement >= 0.9
    generation = reports["reformer"].generation
    assert generation.tokens == SIZES["batch_size"] * generation.steps and generation.agreement >= 0.9
    assert reports["yoso"].generation is None  # feature extraction: nothing to generate
    switch = reports["switch"]
    assert [c.name for c in switch.components] == ["encoder_model", "decoder_model", "decoder_with_past_model"]
    for component in switch.components:
        assert all(row.passed for row in component.outputs), component.name
    assert switch.generation.tokens == 2 * 8 and switch.generation.agreement >= 0.9


def test_hash_audit_counts_codes_quantization_flipped(reports):
    for name in ("yoso", "reformer"):
        codes = reports[name].components[0].hash_codes
        assert codes.complete and codes.max_flipped == 0.25
        assert 0 <= codes.differing <= codes.total and codes.flipped_share == codes.differing / codes.total
    # YOSO's 16 hashes of 9 bits per token: int8 projections flip some codes.
    assert reports["yoso"].components[0].hash_codes.differing > 0
    data = reports["yoso"].to_dict()
    assert data["components"][0]["outputs"][0]["cosine"] is not None
    assert data["components"][0]["hash_codes"]["flipped_share"] > 0


def test_routing_audit_counts_token_routes(exports, reports):
    """Switch: every component's Top1Dispatch experts are compared token by token (one sparse layer
    per switch-tiny component); the fp32 export routes every token as PyTorch does."""
    from bucketrt.check import check

    quantized = reports["switch"]
    for component in quantized.components:
        routing = component.routing
        assert routing is not None and routing.complete and routing.calls == 1
        batch, length = next(iter(component.inputs.values()))[:2]  # the component's ids: its tokens
        assert routing.total == batch * length
        assert 0 <= routing.differing <= routing.total
    assert quantized.to_dict()["components"][0]["routing"]["share"] == quantized.components[0].routing.share
    assert all(c.routing is None for c in reports["yoso"].components)  # no router
    fp32 = check(exports["switch"][0], batch_size=2, sequence_length=32)
    assert fp32.passed and [c.routing.differing for c in fp32.components] == [0, 0, 0]
    assert all(c.routing.total > 0 for c in fp32.components)
    args = ["check", str(exports["switch"][0]), "--batch-size", "2", "--sequence-length", "16"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "routing: 0 of 32 token routes (0.00%) differ" in " ".join(result.output.split())


def test_quantized_check_fails_below_impossible_criteria(exports, tmp_path):
    report_path = tmp_path / "report.json"
    args = ["check", str(exports["yoso"][1]), "-b", "1", "-n", "32", "--max-code-flips", "0", "--max-rel-l2", "0"]
    result = CliRunner().invoke(cli, [*args, "--json", str(report_path)])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "quantization flipped" in result.output
    data = json.loads(report_path.read_text())
    assert data["passed"] is False and data["criteria"]["max_rel_l2"] == 0
    component = data["components"][0]
    assert component["hash_codes"]["passed"] is False and component["hash_codes"]["differing"] > 0
    assert component["outputs"][0]["passed"] is False


def test_quantized_metrics_rule():
    from bucketrt.check import OutputResult, quantized_metrics

    criteria = {"min_cosine": 0.99, "max_rel_l2": 0.1, "min_agreement": 0.9}
    rng = np.random.default_rng(0)
    want = rng.standard_normal((2, 5, 7)).astype(np.float32)
    row = OutputResult("logits", [2, 5, 7], [2, 5, 7])
    quantized_metrics(row, want * 1.01, want, criteria)
    assert row.passed and row.cosine == pytest.approx(1.0) and row.rel_l2 == pytest.approx(0.01, rel=1e-4)
    assert row.agreement == 1.0
    flipped = -want  # every answer changes
    quantized_metrics(row, flipped, want, criteria)
    assert not row.passed and row.cosine == pytest.approx(-1.0) and row.agreement < 0.5
    # The masked positions do not count towards per-token answers.
    mask = np.zeros((2, 5), np.int64)
    mask[0, 0] = 1
    half = want.copy()
    half[1] = -want[1]
    quantized_metrics(row, half, want, {**criteria, "min_cosine": -1, "max_rel_l2": 10}, mask)
    assert row.agreement == 1.0 and row.passed
    nan = want.copy()
    nan[0, 0, 0] = np.nan
    quantized_metrics(row, nan, want, criteria)
    assert not row.passed


def _linear_model(folder):
    """One MatMul, x [256, 32] by w [32, 64] (float32, seed 0): its file, x and the float product."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 64)) * 0.1).astype(np.float32)
    x = rng.standard_normal((256, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    onnx.save(model, str(folder / "linear.onnx"))
    return folder / "linear.onnx", x, x @ w


def _quantized_error(folder, **settings) -> float:
    """Relative L2 error of the linear model quantized with `settings`, run in ONNX Runtime."""
    import bucketrt
    from bucketrt.quantization.quantize import quantize_model_file

    path, x, want = _linear_model(folder)
    quantize_model_file(path, folder / "q.onnx", **settings)
    got = bucketrt.ort_session(folder / "q.onnx").run(None, {"x": x})[0]
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_linear_layer_error_is_the_int8_rounding(tmp_path):
    """One MatMul with a full-range weight: ORT's int8 product is within the error of exact int8
    arithmetic. With 8-bit weights, ORT's AVX2 kernel (no VNNI) saturates int16 sums: 0.05-0.1."""
    for per_channel in (True, False):
        assert _quantized_error(tmp_path, per_channel=per_channel) < 0.025, per_channel


def test_full_range_weights(exports, tmp_path):
    """--full-range: 8-bit weights (|w| up to 127; the default 7-bit range stops at 64), recorded in
    the manifest and the CLI's summary."""
    from onnx import numpy_helper

    def widest(folder):
        model = onnx.load(str(folder / "model.onnx"))
        weights = {i.name: i for i in model.graph.initializer}
        b = [weights[n.input[1]] for n in model.graph.node if n.op_type == "MatMulInteger"]
        return max(int(np.abs(numpy_helper.to_array(w).astype(np.int32)).max()) for w in b)

    source, default = exports["yoso"]
    result = CliRunner().invoke(cli, ["quantize", "--full-range", str(source), str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert "full range" in " ".join(result.output.split())
    assert _manifest(tmp_path / "q")["quantization"]["reduce_range"] is False
    assert widest(tmp_path / "q") == 127 and widest(default) <= 64


def test_full_range_is_exact_int8_on_vnni(tmp_path):
    """On a CPU with VNNI, ORT's int8 product with 8-bit weights is the exact int8 arithmetic's
    (vpdpbusd sums exactly), below the 7-bit range's error. Without VNNI it saturates (skipped)."""
    from bucketrt.benchmarking import cpu_isa

    if not cpu_isa()["vnni"]:
        pytest.skip("no VNNI: ONNX Runtime's AVX2 int8 kernel saturates 8-bit weights' pair sums")
    errors = {reduce: _quantized_error(tmp_path, reduce_range=reduce) for reduce in (True, False)}
    assert errors[False] < 0.012 and errors[False] < 0.75 * errors[True], errors


def test_switch_quantized_components_run(exports):
    """Every component of the seq2seq export loads and runs in ONNX Runtime, close to fp32."""
    import bucketrt
    from bucketrt.exporter import make_inputs

    source, target = exports["switch"]
    manifest = _manifest(source)
    for entry in manifest["components"]:
        feeds = make_inputs(manifest, 1, 16, component=entry["name"])
        want = bucketrt.ort_session(source, component=entry["name"]).run(None, feeds)[0]
        got = bucketrt.ort_session(target, component=entry["name"]).run(None, feeds)[0]
        cosine = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
        assert got.shape == want.shape and 0.95 < cosine < 1.0 - 1e-9


def test_exclude_weight_type_and_per_tensor(exports, tmp_path):
    from bucketrt.quantization import quantize

    source = exports["yoso"][0]
    manifest = quantize(
        source,
        tmp_path / "q",
        per_channel=False,
        weight_type="uint8",
        exclude=["node_MatMul_2?", "re:node_MatMul_11[35]"],
    )
    q = manifest["quantization"]
    assert q["components"]["model"]["excluded_nodes"] == ["node_MatMul_26", "node_MatMul_113", "node_MatMul_115"]
    assert (q["weight_type"], q["per_channel"]) == ("uint8", False)
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    names = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    assert {"node_MatMul_26", "node_MatMul_113", "node_MatMul_115"} <= names
    weights = {i.name: i.data_type for i in model.graph.initializer}
    b = [weights[n.input[1]] for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert b and set(b) == {onnx.TensorProto.UINT8}
    assert q["components"]["model"]["quantized_nodes"] == 12 - 3


def test_uint8_weights_leave_the_experts_float(exports, tmp_path):
    from bucketrt.quantization import quantize

    manifest = quantize(exports["switch"][0], tmp_path / "q", weight_type="uint8")
    assert manifest["quantization"]["experts"]["quantized"] is False
    assert "ExpertFFN" in {o["name"] for o in manifest["ops"]}


def test_cli_errors(exports, tmp_path):
    runner = CliRunner()
    source, quantized = exports["yoso"]

    def error(*args):
        result = runner.invoke(cli, list(map(str, args)))
        assert result.exit_code == 2, result.output
        return result.output

    assert "already quantized" in error("quantize", quantized, tmp_path / "again")
    assert "the output folder is the export folder" in error("quantize", source, source)
    assert "matches no MatMul/Gemm node" in error("quantize", source, tmp_path / "x", "--exclude", "nothing*")
    assert "not a valid regular expression" in error("quantize", source, tmp_path / "x", "--exclude", "re:(")
    assert "does not exist" in error("quantize", tmp_path / "missing", tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert "not empty" in error("quantize", source, tmp_path / "busy")
    assert "Invalid value for '--weight-type'" in error("quantize", source, tmp_path / "x", "--weight-type", "int4")
    half = tmp_path / "fp16"
    shutil.copytree(source, half)
    manifest = _manifest(half)
    manifest["dtype"] = "fp16"
    (half / "bucketrt.json").write_text(json.dumps(manifest))
    assert "fp16 export" in error("quantize", half, tmp_path / "x")
    assert "apply to quantized exports" in error("check", source, "--min-cosine", "0.5")
    assert "TensorRT does not run" in error("check", quantized, "--backend", "trt")
    assert "not a .png" in error("bench", quantized, "--plot", tmp_path / "figure.svg")
    # The folder a previous quantize wrote is replaced.
    again = runner.invoke(cli, ["quantize", str(source), str(quantized), "--per-tensor"])
    assert again.exit_code == 0, again.output
    assert _manifest(quantized)["quantization"]["per_channel"] is False


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_from_a_fake_bench_result(tmp_path):
    from bucketrt.benchmarking import plot_scaling

    series = {
        "bucketrt ORT int8": [(1024, 500.0), (2048, 1000.0), (4096, 2000.0)],
        "BERT ORT fp32": [(1024, 1200.0), (2048, 3000.0), (4096, 8600.0)],
    }
    path = plot_scaling(series, tmp_path / "figure.png", "fake", size=(6, 4), dpi=50)
    assert _png_size(path) == (300, 200)
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_scaling({"empty": []}, tmp_path / "none.png")


def test_bench_plot_cli(exports, tmp_path):
    figure = tmp_path / "bench.png"
    args = ["bench", str(exports["yoso"][1]), "--sequence-lengths", "16,32", "--repeat", "1", "--plot", str(figure)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "AVX2" in result.output and "Plot:" in result.output
    assert _png_size(figure) == (800, 500)


def test_an_excluded_gemm_stays_float(tmp_path):
    # ONNX Runtime's dynamic quantizer turns every Gemm into a MatMul (and an Add) named <name>_MatMul
    # before it applies nodes_to_exclude: quantize_model_file excludes a Gemm by both names.
    from onnx import helper, numpy_helper

    from bucketrt.quantization import quantize_model_file

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", f"w{i}", f"b{i}"], [f"y{i}"], name=f"linear_{i}", transB=1) for i in (0, 1)]
    nodes.append(helper.make_node("Add", ["y0", "y1"], ["y"], name="sum"))
    weights = [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), f"w{i}") for i in (0, 1)]
    biases = [numpy_helper.from_array(np.zeros(16, np.float32), f"b{i}") for i in (0, 1)]
    graph = helper.make_graph(
        nodes,
        "two_gemms",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 16])],
        weights + biases,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "model.onnx")
    quantize_model_file(tmp_path / "model.onnx", tmp_path / "int8.onnx", nodes_to_exclude=["linear_1"])
    kinds = {n.name: n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert kinds.get("linear_1_MatMul") == "MatMul" and "linear_1_MatMul_quant" not in kinds
    assert any(kind == "MatMulInteger" and name.startswith("linear_0") for name, kind in kinds.items())


def test_routers_are_the_linear_nodes_computing_routing_inputs():
    """router_nodes walks back from the routing inputs (the spec's `routing` tensors) through any
    op, to the first linear node on each path: here a DeepSeek-style router (MatMul, Sigmoid, a bias
    correction, TopK, weights gathered and renormalised), beside a hidden state that comes from
    another linear node and whose shape the routing reads (Shape ends a path)."""
    from onnx import helper

    from bucketrt.quantization.quantize import router_nodes

    node = helper.make_node
    nodes = [
        node("MatMul", ["x", "w_o"], ["attn"], name="o_proj"),  # the layer before: not a router
        node("Add", ["x", "attn"], ["hidden"], name="residual"),
        node("MatMul", ["hidden", "w_router"], ["logits"], name="router"),
        node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
        node("Add", ["scores", "correction"], ["biased"], name="correct"),
        node("Shape", ["hidden"], ["hidden_shape"], name="shape"),
        node("Reshape", ["biased", "hidden_shape"], ["biased_2d"], name="reshape"),
        node("TopK", ["biased_2d", "k"], ["_", "index64"], name="topk"),
        node("GatherElements", ["scores", "index64"], ["picked"], name="gather", axis=1),
        node("ReduceSum", ["picked", "axis"], ["total"], name="total"),
        node("Div", ["picked", "total"], ["weight"], name="normalise"),
        node("Cast", ["index64"], ["index"], name="cast", to=onnx.TensorProto.INT32),
        node(
            "TopKExperts",
            ["hidden", "index", "weight", "gate_up", "", "down", ""],
            ["y"],
            name="experts",
            domain=DOMAIN,
        ),
        node("MatMul", ["y", "w_head"], ["out"], name="head"),  # after the experts: not a router
    ]
    graph = helper.make_graph(nodes, "routing", [], [])
    assert router_nodes(helper.make_model(graph)) == ["router"]
    # Top1Dispatch's probs (Switch): MatMul, Softmax.
    switch = helper.make_graph(
        [
            node("MatMul", ["hidden", "w_router"], ["logits"], name="switch_router"),
            node("Softmax", ["logits"], ["probs"], name="softmax"),
            node("Top1Dispatch", ["probs"], ["e", "g", "p", "c", "o"], name="dispatch", domain=DOMAIN),
        ],
        "switch",
        [],
        [],
    )
    assert router_nodes(helper.make_model(switch)) == ["switch_router"]
