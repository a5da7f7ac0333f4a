"""TopKExperts: the native CPU kernel (through ONNX Runtime) against the PyTorch reference.

The shape grid and the input makers are the one table's (tests/op_inputs.py: TOPK_CASES,
topk_experts_inputs); the non-finite cases are kernel_cases.py's, shared with the CUDA tests. The grid
covers K 1 to 8, E 1 to 64, tokens without an expert, D and F off the SIMD steps and the kernel's
slices, decoding steps and experts with more rows than one task; the tests below add every gating
with several activations, float16, an expert crowded past a task's rows, every expert empty,
duplicate picks, the order of the sum over picks, the blocks of tokens, the SIMD variants and bad
input in the reference's words.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from child_process import run_op_in_child
from op_inputs import GATING_LIMITS, TOPK_CASES, topk_attrs, topk_experts_inputs

from bucketrt.library import op_session, run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import EXPERT_ACTIVATIONS, EXPERT_GATINGS, TOPK_EXPERTS


def _reference(inputs: dict[str, np.ndarray], attrs: dict) -> np.ndarray:
    return reference.topk_experts(*(torch.from_numpy(inputs[t.name]) for t in TOPK_EXPERTS.inputs), **attrs).numpy()


def check(inputs: dict[str, np.ndarray], attrs: dict, rtol: float = 2e-5, **run_kwargs) -> np.ndarray:
    (out,) = run_op(TOPK_EXPERTS, inputs, attrs, **run_kwargs)
    ref = _reference(inputs, attrs)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    scale = max(1.0, float(np.abs(ref.astype(np.float32)).max()))
    err = float(np.abs(out.astype(np.float32) - ref.astype(np.float32)).max())
    assert err <= rtol * scale, f"{attrs}: max abs error {err} (scale {scale})"
    # A token none of whose picks has an expert gets exactly 0.
    dead = (inputs["expert_index"] == inputs["gate_up"].shape[0]).all(1)
    assert not out[dead].any()
    return out


def _seed(*sizes) -> int:
    return sum((i + 1) * hash(str(s)) % 10007 for i, s in enumerate(sizes))


@pytest.mark.parametrize("tokens,picks,dim,ff,experts,gating,none", TOPK_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_reference(tokens, picks, dim, ff, experts, gating, none, threads):
    rng = np.random.default_rng(tokens * 1000 + picks * 100 + experts)
    inputs = topk_experts_inputs(rng, tokens, picks, dim, ff, experts, gating, none)
    check(inputs, topk_attrs(gating, "silu"), intra_op_num_threads=threads)


@pytest.mark.parametrize("gating", EXPERT_GATINGS)
@pytest.mark.parametrize("activation", ["silu", "gelu", "quick_gelu", "relu", "gelu_pytorch_tanh", "relu2"])
def test_every_gating(gating, activation):
    rng = np.random.default_rng(len(gating) * 31 + len(activation))
    inputs = topk_experts_inputs(rng, 40, 3, 24, 40, 6, gating, none=0.1)
    inputs["hidden"] *= 4.0  # reach the clamps (limit 7 or 10) and the activations' saturation
    inputs["gate_up_bias"] *= 20.0
    check(inputs, topk_attrs(gating, activation))


@pytest.mark.parametrize("activation", EXPERT_ACTIVATIONS)
def test_every_activation(activation):
    inputs = topk_experts_inputs(np.random.default_rng(3), 12, 2, 16, 24, 3, "glu", none=0.1)
    inputs["hidden"] *= 4.0
    check(inputs, topk_attrs("glu", activation))


def test_limits_clamp_where_the_gating_says():
    # A limit small enough to clamp most values: the gatings give different results, each the reference's.
    inputs = topk_experts_inputs(np.random.default_rng(4), 30, 2, 16, 20, 4, "glu")
    outs = {}
    for gating in ("glu", "glu_clamped", "glu_clamped_after", "glu_clamped_offset"):
        attrs = {"activation": "silu", "gating": gating, "limit": 0.0 if gating == "glu" else 0.25}
        outs[gating] = check(inputs, attrs)
    assert len({o.tobytes() for o in outs.values()}) == 4


def test_tokens_without_experts_and_empty_experts():
    rng = np.random.default_rng(5)
    inputs = topk_experts_inputs(rng, 20, 4, 16, 24, 8, "glu")
    index = inputs["expert_index"]
    index[3] = 8  # a token without an expert
    index[7, :3] = 8
    index[index == 2] = 8  # expert 2 gets no row
    index[index == 5] = 8
    inputs["expert_weight"][3] = np.nan  # an ignored pick's weight changes nothing
    inputs["expert_weight"][7, :3] = np.inf
    out = check(inputs, topk_attrs())
    assert not out[3].any() and np.isfinite(out).all()
    # Every expert empty: zeros everywhere, whatever the weights.
    inputs["expert_index"][:] = 8
    inputs["expert_weight"][:] = np.nan
    (out,) = run_op(TOPK_EXPERTS, inputs, topk_attrs())
    assert out.shape == (20, 16) and not out.any()


@pytest.mark.parametrize("threads", [1, 2])
def test_one_expert_crowded(threads):
    # Every token's first pick is expert 0: 600 rows, three tasks' worth, the others few.
    rng = np.random.default_rng(6)
    inputs = topk_experts_inputs(rng, 600, 2, 40, 72, 5, "glu_clamped", crowd=1.0)
    inputs["expert_index"][:, 0] = 0
    inputs["expert_index"][:, 1] = np.where(inputs["expert_index"][:, 1] == 0, 1, inputs["expert_index"][:, 1])
    check(inputs, topk_attrs("glu_clamped", "gelu"), intra_op_num_threads=threads)


def test_duplicate_picks_and_more_picks_than_experts():
    # A token may pick the same expert twice (K > E here): each pick counts, with its own weight.
    rng = np.random.default_rng(7)
    inputs = topk_experts_inputs(rng, 9, 8, 12, 10, 1, "glu")
    assert (inputs["expert_index"] == 0).sum() > 9
    check(inputs, topk_attrs())
    inputs = topk_experts_inputs(rng, 9, 3, 12, 10, 4, "none", index=np.array([[1, 1, 3]] * 9, np.int32))
    check(inputs, topk_attrs("none", "relu"))


def test_the_sum_over_picks_is_in_pick_order():
    # y_j = down_bias[e_j] exactly (down is 0): biases 1e30, 1, -1e30 make the sum's order visible,
    # (1e30 + 1) - 1e30 = 0 but (1e30 - 1e30) + 1 = 1, whatever order the experts are computed in.
    experts, dim = 3, 4
    index = np.array([[0, 1, 2], [0, 2, 1], [2, 0, 1], [1, 3, 0]], np.int32)
    inputs = topk_experts_inputs(np.random.default_rng(8), 4, 3, dim, 2, experts, "none", index=index)
    inputs["down"][:] = 0.0
    inputs["down_bias"][:] = np.array([1e30, 1.0, -1e30], np.float32)[:, None]
    inputs["expert_weight"][:] = 1.0
    (out,) = run_op(TOPK_EXPERTS, inputs, topk_attrs("none", "relu"))
    ref = _reference(inputs, topk_attrs("none", "relu"))
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out[:, 0], np.array([0.0, 1.0, 1.0, 1e30], np.float32))  # the last: 1 + 1e30


def test_blocks_of_tokens():
    # K * (D + F) large enough that the tokens are cut into blocks (each re-reading the weights):
    # 2^25 floats per block at most, 63 tokens here, so 130 tokens make three blocks.
    rng = np.random.default_rng(9)
    inputs = topk_experts_inputs(rng, 130, 8, 65536, 8, 3, "none", none=0.1)
    check(inputs, topk_attrs("none", "relu"), intra_op_num_threads=2)


@pytest.mark.parametrize("tokens,picks,dim,ff,experts,gating,none", TOPK_CASES)
def test_float16(tokens, picks, dim, ff, experts, gating, none):
    # float16 inputs: the float32 kernel on the widened values (weights widened per task), its output
    # rounded once: exactly the float32 run's output rounded; and the reference's within 2e-3.
    rng = np.random.default_rng(tokens + picks + experts)
    inputs = topk_experts_inputs(rng, tokens, picks, dim, ff, experts, gating, none)
    attrs = topk_attrs(gating, "gelu_pytorch_tanh")
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in inputs.items()}
    (out,) = run_op(TOPK_EXPERTS, half, attrs)
    assert out.dtype == np.float16
    widened = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in half.items()}
    (out32,) = run_op(TOPK_EXPERTS, widened, attrs)
    np.testing.assert_array_equal(out, out32.astype(np.float16))
    check(half, attrs, rtol=2e-3)


def test_float16_special_values_widen_exactly():
    # Subnormal, infinite and NaN float16 weights: widened exactly (F16C or not), as numpy does.
    rng = np.random.default_rng(10)
    inputs = topk_experts_inputs(rng, 6, 2, 16, 8, 2, "none")
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in inputs.items()}
    half["down"][0, 0, :3] = np.array([6e-8, -3e-6, 1e-5], np.float16)  # subnormals
    half["down"][1, 2, 1] = np.inf
    half["gate_up"][1, 3, 5] = np.nan
    widened = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in half.items()}
    attrs = topk_attrs("none", "relu")
    (out,) = run_op(TOPK_EXPERTS, half, attrs)
    (out32,) = run_op(TOPK_EXPERTS, widened, attrs)
    np.testing.assert_array_equal(out, out32.astype(np.float16))
    (generic,) = run_op_in_child("TopKExperts", half, attrs, env={"BUCKETRT_SIMD": "generic"})
    np.testing.assert_array_equal(
        np.isnan(generic.astype(np.float32)), np.isnan(out.astype(np.float32))
    )  # the same widening (the tiles may round apart)


@pytest.mark.parametrize("cap", ["generic", "avx2"])
def test_simd_variants_agree(cap):
    # The library reads BUCKETRT_SIMD once per process: each capped run is a child process's.
    inputs = topk_experts_inputs(np.random.default_rng(11), 70, 3, 33, 130, 6, "glu_clamped", none=0.1)
    attrs = topk_attrs("glu_clamped", "gelu")
    best = check(inputs, attrs)
    (capped,) = run_op_in_child("TopKExperts", inputs, attrs, env={"BUCKETRT_SIMD": cap})
    ref = _reference(inputs, attrs)
    assert float(np.abs(capped - ref).max()) <= 2e-5 * max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(best - capped).max()) <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_threads_do_not_change_a_bit():
    # Decode and prefill shapes: the tasks follow the shapes, so any thread count gives the same bits.
    for sizes in ((2, 8, 64, 96, 16, "glu"), (300, 2, 48, 200, 4, "glu_clamped_offset")):
        *dims, gating = sizes
        inputs = topk_experts_inputs(np.random.default_rng(12), *dims, gating, none=0.1)
        meta = {name: (str(a.dtype), list(a.shape)) for name, a in inputs.items()}
        outs = [
            op_session(TOPK_EXPERTS, topk_attrs(gating), meta, intra_op_num_threads=n).run(None, inputs)[0]
            for n in (1, 2, 3)
        ]
        for out in outs[1:]:
            np.testing.assert_array_equal(out, outs[0])


# -- bad input ---------------------------------------------------------------------------------


def _bad_cases():
    good = topk_experts_inputs(np.random.default_rng(13), 6, 3, 8, 5, 4, "glu")
    above = {**good, "expert_index": good["expert_index"].copy()}
    above["expert_index"][2, 1] = 5
    above["expert_index"][4, 0] = -1  # later in row-major order: the first culprit is named
    negative = {**good, "expert_index": good["expert_index"].copy()}
    negative["expert_index"][0, 2] = -(2**31)
    plain = topk_experts_inputs(np.random.default_rng(13), 6, 3, 8, 5, 4, "none")
    return [
        ("index above E", above, topk_attrs(), "expert_index", "has 5 at [2, 1], outside [0, E=4] (E: no expert)"),
        ("index int32 min", negative, topk_attrs(), "expert_index", "has -2147483648 at [0, 2]"),
        ("G not 2F for glu", plain, topk_attrs(), "gate_up", "dim 1 (G) must be 2*F = 10 for gating 'glu', got 5"),
        ("G not F for none", good, topk_attrs("none"), "gate_up", "must be F = 5 for gating 'none', got 10"),
        (
            "limit 0 for a limited gating",
            good,
            {"gating": "glu_clamped"},
            "limit",
            "attribute 'limit' must be > 0 for gating 'glu_clamped', got 0",
        ),
        (
            "limit for glu",
            good,
            {"gating": "glu", "limit": 7.0},
            "limit",
            "attribute 'limit' applies to gatings glu_clamped, glu_clamped_after, glu_clamped_offset only; "
            "it must be 0 for gating 'glu', got 7",
        ),
        ("limit an int", good, {"gating": "glu_clamped", "limit": 7}, "limit", "must be a float, got 7"),
        ("limit NaN", good, {"gating": "glu_clamped", "limit": float("nan")}, "limit", "must be finite, got nan"),
        ("limit above 65504", good, {"gating": "glu_clamped", "limit": 1e31}, "limit", "must be <= 65504, got 1e+31"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_in_the_references_words(case):
    _, inputs, attrs, culprit, words = case
    with pytest.raises(ValueError) as ref:
        _reference(inputs, attrs)
    assert words in str(ref.value) and culprit in str(ref.value)
    with pytest.raises(Exception) as native:
        run_op(TOPK_EXPERTS, inputs, attrs)
    assert str(ref.value) in str(native.value), (str(ref.value), str(native.value))


def test_limit_errors_come_at_session_creation():
    with pytest.raises(Exception, match="TopKExperts: attribute 'limit' must be > 0 for gating 'glu_clamped_after'"):
        op_session(TOPK_EXPERTS, {"gating": "glu_clamped_after"})
    assert GATING_LIMITS["glu_clamped_after"] > 0


# -- huge pages for the experts' weights -----------------------------------------------------------


def _huge_mib_over(ranges: list[tuple[int, int]]) -> int:
    """AnonHugePages, in MiB, of this process's mappings that overlap the address ranges [lo, hi)."""
    total = 0
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                overlaps = any(lo < end and start < hi for start, end in ranges)
            elif head == "AnonHugePages:" and overlaps:
                total += int(line.split()[1])
    return total // 1024


def _own_copy(array: np.ndarray):
    """`array` copied into an anonymous mapping of its own (never asked for huge pages, unlike
    numpy's large arrays): (the mapping, the copy on it)."""
    import mmap

    region = mmap.mmap(-1, array.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    copy = np.frombuffer(region, dtype=array.dtype).reshape(array.shape)
    copy[...] = array
    return region, copy


def _collapse_works() -> bool:
    """Whether this kernel moves populated anonymous memory into a huge page on request
    (MADV_COLLAPSE, Linux 6.1), tried on 4 MiB of this process's own."""
    import ctypes
    import mmap

    region = mmap.mmap(-1, 4 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.write(b"\1" * (4 << 20))
    view = ctypes.c_char.from_buffer(region)
    page = (ctypes.addressof(view) + (2 << 20) - 1) & ~((2 << 20) - 1)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    collapsed = libc.madvise(page, 2 << 20, 25) == 0  # MADV_COLLAPSE
    del view
    region.close()
    return collapsed


def _thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as setting:
            text = setting.read()
    except OSError:
        return ""
    return text[text.index("[") + 1 : text.index("]")]


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or _thp_mode() != "madvise" or not _collapse_works(),
    reason="needs Linux with transparent huge pages on request (madvise) and MADV_COLLAPSE",
)
@pytest.mark.parametrize("no_huge_pages", [False, True])
def test_constant_expert_weights_move_into_huge_pages(no_huge_pages):
    # The session's constant gate_up (16 MiB) and down (8 MiB) are moved into huge pages when the
    # kernel is made, unless the session config entry "bucketrt.no_huge_pages" says not to; the
    # results are the reference's either way. The weights are the test's own memory (initializers
    # added to the SessionOptions, which ONNX Runtime uses in place), so that only their mappings
    # are counted: other memory of the process gains and loses huge pages of its own accord (numpy
    # asks for them for its large arrays, and freed blocks are reused or released at any time).
    import onnx
    import onnxruntime as ort

    from bucketrt.library import library_path
    from bucketrt.ops.graph import single_op_model

    rng = np.random.default_rng(41)
    inputs = topk_experts_inputs(rng, 5, 2, 512, 512, 8)
    attrs = topk_attrs()
    model = single_op_model(TOPK_EXPERTS, attrs)
    weights = ("gate_up", "gate_up_bias", "down", "down_bias")
    kept = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(inputs[name], name) for name in weights)
    options = ort.SessionOptions()
    if no_huge_pages:
        options.add_session_config_entry("bucketrt.no_huge_pages", "1")
    options.register_custom_ops_library(library_path())
    owned = {name: _own_copy(inputs[name]) for name in ("gate_up", "down")}
    values = {name: ort.OrtValue.ortvalue_from_numpy(copy) for name, (_, copy) in owned.items()}
    for name, value in values.items():
        options.add_initializer(name, value)
    ranges = [(copy.ctypes.data, copy.ctypes.data + copy.nbytes) for _, copy in owned.values()]
    before = _huge_mib_over(ranges)
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    moved = _huge_mib_over(ranges) - before
    if no_huge_pages:
        assert moved == 0
    else:
        assert moved >= 20  # at least the whole 2 MiB pages inside the two tensors
    (out,) = session.run(None, {name: inputs[name] for name in ("hidden", "expert_index", "expert_weight")})
    np.testing.assert_allclose(out, _reference(inputs, attrs), rtol=2e-5, atol=2e-5)
