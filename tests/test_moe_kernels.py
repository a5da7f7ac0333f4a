"""Top1Dispatch and ExpertFFN: native CPU kernels (through ONNX Runtime) against the PyTorch
references, the references against transformers' own router and experts, and bad input.

Sizes are small and odd (D 7/16/24, F 5/40/96, E 1/2/3/8/16) and cover the routing corner cases:
experts over capacity, experts with no token, capacity 0 (every token dropped), ties in the
probabilities (the first maximum wins), NaN probabilities, and tiles split across workers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from child_process import run_op_in_child
from op_inputs import EXPERT_FFN_CASES, TOP1_CASES, expert_ffn_inputs, top1_probs

from bucketrt.library import run_op
from bucketrt.ops import reference
from bucketrt.ops.catalogue import EXPERT_ACTIVATIONS, EXPERT_FFN, TOP1_DISPATCH

DISPATCH_OUTPUTS = ("expert", "gate", "priority", "counts", "order")


def _probs(rng, batch, length, experts, skew=0.0):
    logits = rng.standard_normal((batch, length, experts)).astype(np.float32)
    logits[..., 0] += skew  # skew > 0 crowds expert 0 (overflow) and starves the others
    return torch.softmax(torch.from_numpy(logits), -1).numpy()


def _dispatch_both(probs, capacity):
    ours = run_op(TOP1_DISPATCH, {"probs": probs}, {"expert_capacity": capacity})
    ref = [t.numpy() for t in reference.top1_dispatch(torch.from_numpy(probs), expert_capacity=capacity)]
    return ours, ref


@pytest.mark.parametrize("batch,length,experts,capacity,skew", TOP1_CASES)
def test_top1_dispatch_matches_reference(batch, length, experts, capacity, skew):
    probs = _probs(np.random.default_rng(batch * 100 + length), batch, length, experts, skew)
    ours, ref = _dispatch_both(probs, capacity)
    for name, a, b in zip(DISPATCH_OUTPUTS, ours, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    expert, gate, priority, counts, order = ours
    # The corner cases the parameters aim at actually happen.
    if skew >= 2.0:
        assert (expert == -1).any(), "no token overflowed"
    if skew >= 6.0:
        assert (counts == 0).any(), "every expert got a token"
    assert counts.sum() == (expert >= 0).sum() == (order.reshape(-1) >= 0).sum()


def test_top1_dispatch_ties_and_nan():
    probs = np.full((1, 4, 4), 0.25, np.float32)  # all tied: expert 0 (the first maximum)
    probs[0, 1] = [0.1, 0.4, 0.4, 0.1]  # tie between 1 and 2: 1
    probs[0, 2] = [0.1, np.nan, 0.5, np.nan]  # NaN is the maximum, the first one: 1 (as torch.argmax)
    ours, ref = _dispatch_both(probs, 8)
    np.testing.assert_array_equal(ours[0], [[0, 1, 1, 0]])
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


def test_top1_dispatch_float16_probs():
    # float16 probabilities: choices among the widened values (ties are common in float16), the gate
    # the chosen float16 probability itself.
    probs = top1_probs(np.random.default_rng(7), 3, 40, 8, skew=1.0).astype(np.float16)
    probs[0, :5] = np.float16(0.125)  # all tied: expert 0
    probs[1, 3, [2, 5]] = np.nan
    ours, ref = _dispatch_both(probs, 6)
    assert ours[1].dtype == np.float16
    for name, a, b in zip(DISPATCH_OUTPUTS, ours, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    widened = run_op(TOP1_DISPATCH, {"probs": probs.astype(np.float32)}, {"expert_capacity": 6})
    for name, a, b in zip(DISPATCH_OUTPUTS, ours, widened):
        np.testing.assert_array_equal(a.astype(b.dtype), b, err_msg=name)
    assert ours[0][0, :5].tolist() == [0, 0, 0, 0, 0] and ours[0][1, 3] in (2, -1)


def test_top1_dispatch_matches_transformers_router():
    """Expert choice, capacity mask and gate as SwitchTransformersTop1Router returns them."""
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersTop1Router

    torch.manual_seed(0)
    config = SwitchTransformersConfig(d_model=16, num_experts=4, expert_capacity=3)
    router = SwitchTransformersTop1Router(config).eval()
    hidden = torch.randn(3, 20, 16)
    with torch.no_grad():
        onehot, top_prob, logits = router(hidden)
        expert, gate, _, counts, _ = reference.top1_dispatch(torch.softmax(logits, -1), expert_capacity=3)
    hf_expert = torch.where(onehot.sum(-1) > 0, onehot.argmax(-1), -1)
    assert (hf_expert == -1).any()
    torch.testing.assert_close(expert.long(), hf_expert)
    torch.testing.assert_close(gate, top_prob[..., 0], rtol=0, atol=0)
    torch.testing.assert_close(counts.long(), onehot.sum((0, 1)))


def _check_ffn(inputs, activation="relu", **run_kwargs):
    (out,) = run_op(EXPERT_FFN, inputs, {"activation": activation}, **run_kwargs)
    ref = reference.expert_ffn(*[torch.from_numpy(a) for a in inputs.values()], activation=activation).numpy()
    assert out.shape == ref.shape and out.dtype == np.float32
    err = float(np.abs(out - ref).max())
    assert err <= 2e-5 * max(1.0, float(np.abs(ref).max())), f"{activation}: max abs error {err}"
    # Tokens not listed (dropped) get exactly zero.
    listed = np.zeros(inputs["order"].size, bool)
    listed[inputs["order"].reshape(-1)[: inputs["counts"].sum()]] = True
    assert not out.reshape(listed.size, -1)[~listed].any()
    return out


@pytest.mark.parametrize("batch,length,dim,ff,experts,capacity,skew", EXPERT_FFN_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_expert_ffn_matches_reference(batch, length, dim, ff, experts, capacity, skew, threads):
    inputs = expert_ffn_inputs(np.random.default_rng(length), batch, length, dim, ff, experts, capacity, skew)
    _check_ffn(inputs, intra_op_num_threads=threads)


@pytest.mark.parametrize("activation", EXPERT_ACTIVATIONS)
def test_expert_ffn_activations(activation):
    inputs = expert_ffn_inputs(np.random.default_rng(1), 2, 12, 16, 24, 3, 12)
    inputs["hidden"] *= 4.0  # reach the saturating and clipping regions (gelu_10, relu6, softplus threshold)
    _check_ffn(inputs, activation)


def _check_ffn_output(inputs, out, activation):
    ref = reference.expert_ffn(*[torch.from_numpy(a) for a in inputs.values()], activation=activation).numpy()
    assert out.shape == ref.shape and out.dtype == np.float32
    err = float(np.abs(out - ref).max())
    assert err <= 2e-5 * max(1.0, float(np.abs(ref).max())), f"{activation}: max abs error {err}"


def test_expert_ffn_generic_simd_agrees():
    # The library reads BUCKETRT_SIMD once per process: the generic run is a child process's.
    inputs = expert_ffn_inputs(np.random.default_rng(2), 2, 50, 24, 64, 4, 50)
    best = _check_ffn(inputs, "gelu")
    (generic,) = run_op_in_child("ExpertFFN", inputs, {"activation": "gelu"}, env={"BUCKETRT_SIMD": "generic"})
    _check_ffn_output(inputs, generic, "gelu")
    assert float(np.abs(best - generic).max()) <= 1e-5


def test_simd_switch_is_read_once():
    # A child that runs once, then sets BUCKETRT_SIMD=generic, keeps the tile it picked first: its
    # second run equals a plain run bit for bit. Visible where the widest tile's rounding differs
    # from the generic one's (an FMA CPU), skipped where the two agree exactly.
    inputs = expert_ffn_inputs(np.random.default_rng(2), 2, 50, 24, 64, 4, 50)
    attrs = {"activation": "gelu"}
    (best,) = run_op(EXPERT_FFN, inputs, attrs)
    (generic,) = run_op_in_child("ExpertFFN", inputs, attrs, env={"BUCKETRT_SIMD": "generic"})
    if np.array_equal(best, generic):
        pytest.skip("the generic and the widest tile round alike on this CPU: the switch is not observable")
    (later,) = run_op_in_child("ExpertFFN", inputs, attrs, set_after_first={"BUCKETRT_SIMD": "generic"})
    np.testing.assert_array_equal(later, best)


def test_expert_ffn_reference_matches_transformers_experts():
    """The reference's combine equals SwitchTransformersSparseMLP's, dropped tokens included."""
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersSparseMLP

    torch.manual_seed(0)
    config = SwitchTransformersConfig(d_model=16, d_ff=24, num_experts=4, expert_capacity=4, dense_act_fn="gelu_new")
    mlp = SwitchTransformersSparseMLP(config).eval()
    hidden = torch.randn(2, 30, 16)
    with torch.no_grad():
        expected = mlp(hidden)
        logits = mlp.router.classifier(hidden)
        expert, gate, _, counts, order = reference.top1_dispatch(torch.softmax(logits, -1), expert_capacity=4)
        wi = torch.stack([mlp.experts[f"expert_{e}"].wi.weight for e in range(4)])
        wo = torch.stack([mlp.experts[f"expert_{e}"].wo.weight for e in range(4)])
        ours = reference.expert_ffn(hidden, order, counts, gate, wi, wo, activation="gelu_new")
    assert (expert == -1).any()
    assert torch.equal(expected[expert == -1], torch.zeros_like(expected[expert == -1]))  # dropped: zero
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch,length,dim,ff,experts,capacity,skew", EXPERT_FFN_CASES)
def test_expert_ffn_float16(batch, length, dim, ff, experts, capacity, skew):
    # float16 hidden/gate/wi/wo: the float32 kernel on the widened inputs, its output rounded once,
    # so exactly the float32 kernel's output of those inputs, rounded; and the reference's to 2e-3.
    inputs = expert_ffn_inputs(np.random.default_rng(length), batch, length, dim, ff, experts, capacity, skew)
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in inputs.items()}
    (out,) = run_op(EXPERT_FFN, half, {"activation": "gelu_new"})
    assert out.dtype == np.float16
    widened = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in half.items()}
    (out32,) = run_op(EXPERT_FFN, widened, {"activation": "gelu_new"})
    np.testing.assert_array_equal(out, out32.astype(np.float16))
    ref = reference.expert_ffn(*[torch.from_numpy(a) for a in half.values()], activation="gelu_new")
    assert ref.dtype == torch.float16
    ref = ref.float().numpy()
    scale = max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(out.astype(np.float32) - ref).max()) <= 2e-3 * scale


# -- bad input ---------------------------------------------------------------------------------


def _bad_cases():
    good = expert_ffn_inputs(np.random.default_rng(3), 2, 5, 8, 12, 3, 5)
    neg = dict(good, counts=np.array([-1, 5, 6], np.int32))
    many = dict(good, counts=np.array([5, 5, 1], np.int32))
    out_of_range = dict(
        good, order=np.where(good["order"] == good["order"].reshape(-1)[0], 10, good["order"]).astype(np.int32)
    )
    twice = dict(good)
    twice["order"] = good["order"].copy()
    twice["order"].reshape(-1)[1] = twice["order"].reshape(-1)[0]
    wrong_e = dict(good, wo=good["wo"][:2].copy())
    wrong_f = dict(good, wo=np.zeros((3, 8, 11), np.float32))
    wrong_dtype = dict(good, order=good["order"].astype(np.int64))
    return [
        ("negative count", EXPERT_FFN, neg, {}, "counts", True),
        ("counts over tokens", EXPERT_FFN, many, {}, "counts", True),
        ("order out of range", EXPERT_FFN, out_of_range, {}, "order", True),
        ("order twice", EXPERT_FFN, twice, {}, "order", True),
        ("experts mismatch", EXPERT_FFN, wrong_e, {}, "wo", True),
        ("ff mismatch", EXPERT_FFN, wrong_f, {}, "wo", True),
        ("order int64", EXPERT_FFN, wrong_dtype, {}, "order", False),
        ("unknown activation", EXPERT_FFN, good, {"activation": "gated-gelu"}, "activation", True),
        (
            "negative capacity",
            TOP1_DISPATCH,
            {"probs": np.ones((1, 2, 2), np.float32)},
            {"expert_capacity": -1},
            "expert_capacity",
            True,
        ),
        ("probs rank 2", TOP1_DISPATCH, {"probs": np.ones((2, 2), np.float32)}, {"expert_capacity": 1}, "probs", True),
        (
            "probs empty",
            TOP1_DISPATCH,
            {"probs": np.ones((1, 0, 2), np.float32)},
            {"expert_capacity": 1},
            "probs",
            True,
        ),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_is_a_clear_error(case):
    _, spec, inputs, attrs, culprit, same_text = case
    with pytest.raises(Exception) as native:
        run_op(spec, inputs, attrs)
    message = str(native.value)
    assert spec.name in message and culprit in message, message
    with pytest.raises(ValueError) as ref:
        reference.REFERENCES[spec.name](*[torch.from_numpy(a) for a in inputs.values()], **attrs)
    if same_text:
        assert str(ref.value) in message, (str(ref.value), message)
