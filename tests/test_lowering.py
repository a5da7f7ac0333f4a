"""The standard-op lowerings (bucketrt.ops.lowering) against the PyTorch references.

* eagerly, on the kernel tests' shape grids (tests/op_inputs.py) and the non-finite cases
  (tests/kernel_cases.py), float32 and float16: integer outputs identical, floats within fp32
  rounding;
* exported: one graph holding a node-replacement of each case below (an op called through
  `dispatch.call` under `standard_ops()`), traced by torch.onnx with every dynamic dim dynamic, then
  run in an ONNX Runtime session with no bucketrt library registered, at several sizes per dim
  (padded one-chunk attention included) and on the non-finite cases whose static dims fit;
* whole models: `bucketrt export --ops standard` of yoso-tiny (LSH), reformer-tiny and lsg-bert-tiny
  with lsh sparsity, run without the library, gives the outputs of the rebuilt PyTorch model.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from kernel_cases import (
    NONFINITE_CASES,
    NONFINITE_RTOL,
    argmax_flip_margins,
    assert_nonfinite_close,
    gaussian_near_zero,
    nonfinite_inputs,
)
from op_inputs import (
    ARGMAX_CASES,
    BUCKET_SUM_CASES,
    CHUNK_ATTENTION_CASES,
    GAUSSIAN_CASES,
    HADAMARD_CASES,
    LSH_CASES,
    argmax_inputs,
    bucket_sum_inputs,
    chunk_attention_inputs,
    hadamard_inputs,
    lsh_inputs,
    sign_inputs,
)

from bucketrt.ops import lowering, reference
from bucketrt.ops.catalogue import BY_NAME
from bucketrt.ops.dispatch import call, standard_ops
from bucketrt.ops.lowering import LOWERINGS, stable_argsort
from bucketrt.ops.schema import DOMAIN

LOWERED = ("SignHash", "ArgmaxHash", "LSHCumulation", "BucketSum", "SortedChunkAttention")
DTYPES = {"float32": torch.float32, "float16": torch.float16}
# Float outputs: lowering against reference (relative to max(1, |reference|)).
RTOL = {"float32": 1e-5, "float16": 2e-3}


def _tensors(inputs: dict, dtype: str = "float32") -> list[torch.Tensor]:
    return [
        torch.from_numpy(a).to(DTYPES[dtype]) if np.issubdtype(a.dtype, np.floating) else torch.from_numpy(a)
        for a in inputs.values()
    ]


def _outputs(result) -> list[np.ndarray]:
    return [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]


def _both(op: str, inputs: dict, attrs: dict, dtype: str = "float32"):
    attrs = BY_NAME[op].resolve_attributes(attrs)
    tensors = _tensors(inputs, dtype)
    return _outputs(LOWERINGS[op](*tensors, **attrs)), _outputs(reference.REFERENCES[op](*tensors, **attrs))


def _grid():
    for c in HADAMARD_CASES:
        b, n, d, m, code_len, g = c
        attrs = dict(num_hash=m, hash_code_len=code_len, transform="hadamard")
        yield f"sign-hadamard-{c}", "SignHash", lambda rng, c=c: hadamard_inputs(rng, *c[:3], c[5], c[3], c[4]), attrs
    for c in GAUSSIAN_CASES:
        b, n, d, m, code_len, g = c
        attrs = dict(num_hash=m, hash_code_len=code_len, transform="gaussian")
        yield (
            f"sign-gaussian-{c}",
            "SignHash",
            lambda rng, c=c: sign_inputs(rng, *c[:3], c[5], (c[2], c[3] * c[4])),
            attrs,
        )
    for c in ARGMAX_CASES:
        yield f"argmax-{c}", "ArgmaxHash", lambda rng, c=c: argmax_inputs(rng, *c), dict(num_hash=c[4])
    for c in LSH_CASES:
        yield f"lsh-{c}", "LSHCumulation", lambda rng, c=c: lsh_inputs(rng, *c), dict(hashtable_capacity=c[-1])
    for c in BUCKET_SUM_CASES:
        yield f"bucket-sum-{c}", "BucketSum", lambda rng, c=c: bucket_sum_inputs(rng, *c), dict(num_buckets=c[-1])
    for *c, attrs in CHUNK_ATTENTION_CASES:
        yield f"chunk-{c}", "SortedChunkAttention", lambda rng, c=c: chunk_attention_inputs(rng, *c), attrs


GRID = list(_grid())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GRID, ids=[c[0] for c in GRID])
def test_lowering_matches_the_reference_eagerly(case, dtype):
    case_id, op, make, attrs = case
    inputs = make(np.random.default_rng(sum(map(ord, case_id))))
    ours, ref = _both(op, inputs, attrs, dtype)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if np.issubdtype(b.dtype, np.floating):
            scale = max(1.0, float(np.abs(b.astype(np.float64)).max(initial=0.0)))
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=0, atol=RTOL[dtype] * scale)
        else:  # eagerly the same float32 projections: the same codes to the bit
            np.testing.assert_array_equal(a, b)


NONFINITE = [c for c in NONFINITE_CASES if c[1] in LOWERED]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NONFINITE, ids=[c[0] for c in NONFINITE])
def test_lowering_keeps_the_non_finite_rules(case, dtype):
    _, op, _, attrs, check = case
    inputs = nonfinite_inputs(case, dtype)
    ours, ref = _both(op, inputs, attrs, dtype)
    check(inputs, attrs, ours)
    for a, b in zip(ours, ref, strict=True):
        assert_nonfinite_close(a, b, NONFINITE_RTOL[dtype], op)


def test_lsh_cumulation_past_the_one_hot_limit_scatters():
    """Past ONE_HOT_BUCKETS codes LSHCumulation's sums are ScatterND-adds (a one-hot would outgrow the
    tables), with the reference's numbers."""
    capacity = lowering.ONE_HOT_BUCKETS * 2
    inputs = lsh_inputs(np.random.default_rng(7), 2, 9, 11, 6, 3, capacity, masked=0.3)
    (ours,), (ref,) = _both("LSHCumulation", inputs, dict(hashtable_capacity=capacity))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=RTOL["float32"] * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("length,high", [(5000, 2**31 - 1), (5000, 7), (1, 3), (64, 1)])
def test_stable_argsort_is_a_stable_sort_past_topk_limits(length, high):
    # TensorRT's TopK takes K <= 3840: the sort of 5000 positions takes no TopK (see the export test).
    keys = torch.from_numpy(np.random.default_rng(length + high).integers(0, high + 1, (3, 2, length), dtype=np.int32))
    expected = torch.sort(keys.long(), dim=-1, stable=True).indices
    assert torch.equal(stable_argsort(keys), expected)


# -- exported: one graph of node replacements, run without bucketrt's library ---------------------

# The dims each op's exports leave dynamic (the others are a model's constants: heads, head size,
# hash counts, projections).
DYNAMIC = {
    "SignHash": ("B", "N"),
    "ArgmaxHash": ("B", "N"),
    "LSHCumulation": ("B", "Nq", "Nk"),
    "BucketSum": ("G", "N"),
    "SortedChunkAttention": ("B", "N"),
}


def _feeds(case, nonfinite=()):
    """The case's feeds: the first is the tracing example (dims >= 2, so that none specialises)."""
    case_id, op, make, attrs, sizes = case
    rng = np.random.default_rng(sum(map(ord, case_id)))
    feeds = [(f"{case_id}{size}", make(rng, *size)) for size in sizes]
    feeds += [(nf[0], nonfinite_inputs(nf)) for nf in NONFINITE if nf[0] in nonfinite]
    return feeds


# (id, op, make(rng, *dynamic sizes), attrs, sizes: the example's, then others; N <= chunk_length
# is the padded plain attention).
EXPORTED = [
    (
        "sign-hadamard",
        "SignHash",
        lambda rng, b, n: hadamard_inputs(rng, b, n, 16, 1, 4, 4),
        dict(num_hash=4, hash_code_len=4, transform="hadamard"),
        [(3, 5), (2, 9), (1, 1)],
    ),
    (
        "sign-gaussian",
        "SignHash",
        lambda rng, b, n: sign_inputs(rng, b, n, 8, 2, (8, 12)),
        dict(num_hash=3, hash_code_len=4, transform="gaussian"),
        [(4, 4), (2, 7)],  # B/G of the example >= 2 too
    ),
    (
        "argmax",
        "ArgmaxHash",
        lambda rng, b, n: argmax_inputs(rng, b, 2, n, 4, 2, [4, 6]),
        dict(num_hash=2),
        [(2, 10), (3, 17)],
    ),
    (
        "lsh",
        "LSHCumulation",
        lambda rng, b, nq, nk: lsh_inputs(rng, b, nq, nk, 6, 3, 8, masked=0.3),
        dict(hashtable_capacity=8),
        [(2, 9, 11), (3, 5, 20), (1, 1, 1)],
    ),
    (
        "bucket-sum",
        "BucketSum",
        lambda rng, g, n: bucket_sum_inputs(rng, g, n, 5, 4),
        dict(num_buckets=4),
        [(3, 16), (5, 30), (1, 1)],
    ),
    (
        "chunk",
        "SortedChunkAttention",
        lambda rng, b, n: chunk_attention_inputs(rng, b, 2, n, 8, 2, 4),
        dict(chunk_length=8),
        [(2, 32), (3, 16), (2, 8), (2, 5), (1, 1)],
    ),
    (
        "chunk-causal",
        "SortedChunkAttention",
        lambda rng, b, n: chunk_attention_inputs(rng, b, 2, n, 4, 2, 3),
        dict(chunk_length=4, chunks_before=1, chunks_after=1, causal=1, mask_self=1),
        [(2, 8), (3, 12), (2, 4), (2, 3)],
    ),
]
# The non-finite cases whose static dims (and attributes) are an exported case's.
NONFINITE_FEEDS = {
    "argmax": ("argmax/nan-inf",),
    "lsh": ("lsh/masked-keys-nan-inf",),
    "bucket-sum": ("bucket_sum/nan-inf",),
    "chunk": tuple(c[0] for c in NONFINITE if c[0].startswith("chunk/masked-") and not c[0].endswith("-plain"))
    + ("chunk/live-inf", "chunk/live-nan"),
}


class NodeReplacements(torch.nn.Module):
    """Each case's op called through dispatch.call, on its own inputs: one graph for all."""

    def __init__(self, cases):
        super().__init__()
        self.cases = cases

    def forward(self, *inputs):
        outputs, start = [], 0
        for _, op, _, attrs, _ in self.cases:
            arity = len(BY_NAME[op].inputs)
            result = call(BY_NAME[op], *inputs[start : start + arity], **attrs)
            outputs += list(result) if isinstance(result, tuple) else [result]
            start += arity
        return tuple(outputs)


def _input_names(case) -> list[str]:
    return [f"{case[0]}.{t.name}" for t in BY_NAME[case[1]].inputs]


# float16 adds only the casts around each lowering's float32 computation: its graph leaves out the
# second chunk attention (the costliest case to trace).
EXPORTED_CASES = {"float32": EXPORTED, "float16": [c for c in EXPORTED if c[0] != "chunk-causal"]}


@pytest.fixture(scope="module", params=list(DTYPES))
def exported(request, tmp_path_factory):
    dtype = request.param
    args, shapes, names = [], [], []
    for case in EXPORTED_CASES[dtype]:
        case_id, op, *_ = case
        dims = {sym: torch.export.Dim(f"{case_id}_{sym}".replace("-", "_")) for sym in DYNAMIC[op]}
        (_, example), *_ = _feeds(case)
        args += _tensors(example, dtype)
        shapes += [{axis: dims[d] for axis, d in enumerate(t.dims) if d in dims} for t in BY_NAME[op].inputs]
        names += _input_names(case)
    path = tmp_path_factory.mktemp("lowering") / f"ops-{dtype}.onnx"
    with torch.no_grad(), standard_ops():
        program = torch.onnx.export(
            NodeReplacements(EXPORTED_CASES[dtype]), tuple(args), dynamo=True, dynamic_shapes=(tuple(shapes),), input_names=names,
            opset_version=20, verbose=False,
        )  # fmt: skip
    program.model.ir_version = min(program.model.ir_version, 10)
    program.save(str(path))
    return dtype, path


def test_exported_graph_has_standard_ops_only_and_dynamic_dims(exported):
    _, path = exported
    model = onnx.load(str(path))
    assert not [n.op_type for n in model.graph.node if n.domain == DOMAIN]
    assert DOMAIN not in {o.domain for o in model.opset_import}
    assert "TopK" not in {n.op_type for n in model.graph.node}, "a sort that TensorRT's TopK limit would bound"
    assert not reducing_scatters(model), "TensorRT for RTX's ONNX parser takes no scatter with a reduction"
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    for case in EXPORTED_CASES[exported[0]]:
        for name, tensor in zip(_input_names(case), BY_NAME[case[1]].inputs):
            for axis, sym in enumerate(tensor.dims):
                if sym in DYNAMIC[case[1]]:
                    assert isinstance(inputs[name][axis], str), f"{name} dim {axis} ({sym}): {inputs[name]}"


def reducing_scatters(model: onnx.ModelProto) -> list[str]:
    """The graph's ScatterND and ScatterElements nodes with a reduction (subgraphs included)."""
    found, graphs = [], [model.graph]
    while graphs:
        for node in graphs.pop().node:
            reduction = next((a.s for a in node.attribute if a.name == "reduction"), b"none")
            if node.op_type in ("ScatterND", "ScatterElements") and reduction != b"none":
                found.append(f"{node.op_type} {node.name} reduction={reduction.decode()}")
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            graphs += [g for a in node.attribute for g in a.graphs]
    return found


def _feed_sets(cases):
    """The runs of the graph: run i takes each case's i-th feed (cycling where a case has fewer)."""
    per_case = [_feeds(case, NONFINITE_FEEDS.get(case[0], ())) for case in cases]
    for i in range(max(map(len, per_case))):
        yield [feeds[i % len(feeds)] for feeds in per_case]


def test_exported_graph_runs_without_the_library(exported):
    dtype, path = exported
    np_dtype = np.dtype(dtype)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # no custom-op library
    for chosen in _feed_sets(EXPORTED_CASES[dtype]):
        feeds, expected, spans = {}, [], []
        for case, (feed_id, inputs) in zip(EXPORTED_CASES[dtype], chosen):
            inputs = {k: v.astype(np_dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in inputs.items()}
            feeds.update(zip(_input_names(case), inputs.values()))
            ref = _outputs(reference.REFERENCES[case[1]](*_tensors(inputs, dtype), **case[3]))
            spans.append((case, feed_id, inputs, len(expected), len(ref)))
            expected += ref
        outputs = session.run(None, feeds)
        for case, feed_id, inputs, start, count in spans:
            for ours, ref in zip(outputs[start : start + count], expected[start : start + count]):
                _compare(case, feed_id, inputs, ours, ref, dtype)


def _compare(case, feed_id, inputs, ours, ref, dtype):
    case_id, op, _, attrs, _ = case
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, (feed_id, ours.shape, ref.shape)
    if op == "SignHash" and attrs["transform"] == "gaussian":
        # ONNX Runtime's MatMul sums in its own order: a bit may flip where a projection is ~0.
        near = gaussian_near_zero({k: v.astype(np.float32) for k, v in inputs.items()}, 3, 4)
        assert ((ours == ref) | near).all(), feed_id
    elif op == "ArgmaxHash":
        margins = argmax_flip_margins(inputs, attrs["num_hash"], ours, ref)
        assert (np.asarray(margins) < 1e-4).all(), (feed_id, margins)
    elif np.issubdtype(ref.dtype, np.floating):
        assert_nonfinite_close(ours, ref, NONFINITE_RTOL[dtype] * (10 if op == "LSHCumulation" else 1), feed_id)
    else:
        np.testing.assert_array_equal(ours, ref, err_msg=feed_id)


# -- whole models: --ops standard --------------------------------------------------------------

# Every family whose ops all have lowerings, as `bucketrt export` arguments: the same exports as
# tests/test_without_library.py's and tests/test_trt_rtx.py's, so a test run makes each once (cli_export).
# LSG with lsh sparsity hashes and merges with ArgmaxHash and BucketSum.
MODELS = {
    "yoso": ("--model", "yoso-tiny", "--ops", "standard"),  # LSH mode: SignHash, LSHCumulation
    "reformer": ("--model", "reformer-tiny", "--ops", "standard"),
    "lsg-lsh": ("--model", "lsg-bert-tiny", "--ops", "standard", "--config-override", 'sparsity_type="lsh"'),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def standard_export(request, cli_export):
    from bucketrt.export_format.manifest import read_manifest

    out = cli_export(*MODELS[request.param])
    return out, read_manifest(out)


def test_standard_export_runs_without_the_library_as_its_reference(standard_export):
    from bucketrt.export_format.manifest import needs_op_library
    from bucketrt.exporter.rebuild import load_reference, make_inputs

    out, manifest = standard_export
    assert manifest["op_set"] == "standard" and manifest["ops"] == [] and not needs_op_library(manifest)
    assert manifest["mode"] != "expectation"  # YOSO hashes (SignHash, LSHCumulation)
    model = onnx.load(str(out / "model.onnx"))
    assert not [n for n in model.graph.node if n.domain == DOMAIN]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    reference_model = load_reference(out, manifest)
    # Two lengths and batches from one graph (Reformer: a chunked and a one-chunk length).
    for batch, length in ((2, 64), (1, 37)):
        feeds = make_inputs(manifest, batch, length, seed=length)
        expected = reference_model.run(feeds)
        outputs = session.run(list(expected), feeds)
        for name, ours in zip(expected, outputs):
            np.testing.assert_allclose(
                ours, expected[name], rtol=1e-4, atol=1e-4, err_msg=f"{name} at {batch}x{length}"
            )


def test_standard_export_refuses_an_op_without_lowering(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bucketrt.cli.main import main
    from bucketrt.ops import lowering

    monkeypatch.delitem(lowering.LOWERINGS, "LSHCumulation")
    result = CliRunner().invoke(
        main, ["export", "-m", "yoso-tiny", str(tmp_path / "out"), "--ops", "standard", "--config-override",
               "use_expectation=false"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--ops standard: no standard-op lowering of LSHCumulation" in result.output, result.output
    assert not (tmp_path / "out" / "model.onnx").exists()
