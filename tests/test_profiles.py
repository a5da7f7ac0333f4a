"""TensorRT optimisation profiles: trtexec's shape syntax, the ranges bucketrt fills in, and the
default ranges of the dims (bucketrt.trt.profiles). Plain Python: no TensorRT."""

from __future__ import annotations

import pytest

from bucketrt.errors import ProfileError
from bucketrt.trt.profiles import ShapeRange, format_shapes, parse_shapes, resolve_profile, widen_to

# --------------------------------------------------------------------------------------------
# trtexec's shape syntax
# --------------------------------------------------------------------------------------------


def test_parse_shapes_reads_trtexec_syntax():
    assert parse_shapes("input_ids:1x128,attention_mask:1x128") == {"input_ids": (1, 128), "attention_mask": (1, 128)}
    assert parse_shapes(" input_ids:8x4096 ") == {"input_ids": (8, 4096)}
    assert parse_shapes("past_key_values.0.decoder.key:1x4x0x8") == {"past_key_values.0.decoder.key": (1, 4, 0, 8)}
    # Quoted names may hold ':' and ','; unquoted ones run to the last ':'.
    assert parse_shapes("'input:0':1x3,'a,b':2") == {"input:0": (1, 3), "a,b": (2,)}
    assert parse_shapes("scope:input:4x5") == {"scope:input": (4, 5)}


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "no shapes given"),
        ("input_ids", "is not NAME:DIMS"),
        ("input_ids:", "needs dims like 1x128"),
        ("input_ids:1x", "needs dims like 1x128"),
        ("input_ids:1x-3", "needs dims like 1x128"),
        ("input_ids:1,2", "'2' is not NAME:DIMS"),
        ("input_ids:1x2,,mask:1x2", "empty entry"),
        (":1x2", "has no input name"),
        ("input_ids:1x2,input_ids:1x3", "given twice"),
        ("'input:1x2", "unterminated quote"),
        ("'input'1x2", "expected ':' after the quoted name"),
    ],
)
def test_parse_shapes_errors_name_the_option(text, message):
    with pytest.raises(ProfileError, match=f"--max-shapes: .*{message}"):
        parse_shapes(text, "--max-shapes")


def test_format_shapes_round_trips():
    shapes = {"input_ids": (1, 128), "input:0": (3,), "past.key": (1, 4, 0, 8)}
    assert parse_shapes(format_shapes(shapes)) == shapes


# --------------------------------------------------------------------------------------------
# profiles
# --------------------------------------------------------------------------------------------

ENCODER = [
    {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
    {"name": "attention_mask", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
]
DEFAULTS = {"batch_size": (1, 1, 8), "sequence_length": (1, 128, 512)}


def profile(given=None, inputs=ENCODER, defaults=DEFAULTS):
    return resolve_profile(inputs, given or {}, defaults)


def test_defaults_fill_every_dynamic_dim():
    assert profile() == {
        "input_ids": ShapeRange((1, 1), (1, 128), (8, 512)),
        "attention_mask": ShapeRange((1, 1), (1, 128), (8, 512)),
    }


def test_given_shapes_carry_to_inputs_sharing_their_dims():
    got = profile({"min": {"input_ids": (1, 16)}, "opt": {"input_ids": (4, 256)}, "max": {"input_ids": (16, 512)}})
    assert got["attention_mask"] == got["input_ids"] == ShapeRange((1, 16), (4, 256), (16, 512))


@pytest.mark.parametrize(
    "given,expected",
    [
        # trtexec: min and max default to opt; opt defaults to max, else min.
        ({"opt": {"input_ids": (2, 64)}}, ShapeRange((2, 64), (2, 64), (2, 64))),
        ({"max": {"input_ids": (4, 256)}}, ShapeRange((4, 256), (4, 256), (4, 256))),
        ({"min": {"input_ids": (1, 8)}}, ShapeRange((1, 8), (1, 8), (1, 8))),
        ({"min": {"input_ids": (1, 8)}, "max": {"input_ids": (4, 256)}}, ShapeRange((1, 8), (4, 256), (4, 256))),
        ({"min": {"input_ids": (1, 8)}, "opt": {"input_ids": (2, 32)}}, ShapeRange((1, 8), (2, 32), (2, 32))),
    ],
)
def test_partial_shapes_follow_trtexec(given, expected):
    got = profile(given)
    assert got["input_ids"] == expected and got["attention_mask"] == expected


def test_fixed_dims_and_other_components_inputs():
    inputs = [{"name": "states", "dtype": "float32", "shape": ["batch_size", "sequence_length", 32]}]
    assert profile(inputs=inputs)["states"] == ShapeRange((1, 1, 32), (1, 128, 32), (8, 512, 32))
    # A name that is not an input of this component is another component's business.
    assert profile({"max": {"input_ids": (2, 8)}}, inputs=inputs)["states"].max == (8, 512, 32)
    with pytest.raises(
        ProfileError, match=r"input 'states' of model: dim 2 is fixed at 32 in the model, the shapes give 16/16/16"
    ):
        profile({"opt": {"states": (1, 8, 16)}}, inputs=inputs)


@pytest.mark.parametrize(
    "given,message",
    [
        (
            {"opt": {"input_ids": (1, 8, 2)}},
            r"--opt-shapes: input 'input_ids' of model has rank 2 \[batch_size, sequence_length\], got 1x8x2",
        ),
        (
            {"min": {"input_ids": (1, 8)}, "max": {"input_ids": (2, 8, 1)}},
            "--max-shapes: input 'input_ids' of model has rank 2",
        ),
        (
            {"opt": {"input_ids": (1, 8), "attention_mask": (1, 9)}},
            "inputs 'input_ids' and 'attention_mask' of model share dim 'sequence_length' but are given 8/8/8 and 9/9/9",
        ),
        (
            {"min": {"input_ids": (1, 64)}, "opt": {"input_ids": (1, 32)}, "max": {"input_ids": (1, 128)}},
            "input 'input_ids' of model: dim 1 needs min <= opt <= max, got 64/32/128",
        ),
    ],
)
def test_profile_errors_name_input_and_dim(given, message):
    with pytest.raises(ProfileError, match=message):
        profile(given)


def test_a_default_that_does_not_fit_is_reported():
    # Given max below the default opt for the same dim is the user's to fix, reported not clamped.
    inputs = ENCODER + [{"name": "extra", "dtype": "int64", "shape": ["batch_size", "mystery"]}]
    with pytest.raises(ProfileError, match=r"input 'extra' of model: dim 1 \(mystery\) has no default range"):
        profile(inputs=inputs)
    assert profile({"opt": {"extra": (1, 5)}}, inputs=inputs)["extra"] == ShapeRange((1, 5), (1, 5), (1, 5))


def test_widen_to_tunes_for_the_checked_shapes():
    base = profile()
    got = widen_to(base, {"input_ids": (16, 600)})
    assert got["input_ids"] == ShapeRange((1, 1), (16, 600), (16, 600))
    assert got["attention_mask"] == base["attention_mask"]
    assert got["input_ids"].covers((16, 600)) and not base["input_ids"].covers((16, 600))


def test_default_ranges():
    from bucketrt.trt.profiles import DEFAULT_MAX_SEQUENCE, default_dim_ranges

    yoso = default_dim_ranges({"max_sequence_length": 4096, "config": {"max_position_embeddings": 4098}})
    assert yoso["batch_size"] == (1, 1, 8) and yoso["sequence_length"] == (1, 128, 4096)
    # Older manifests: the config's max_position_embeddings; models without a limit: 512.
    assert default_dim_ranges({"config": {"max_position_embeddings": 64}})["sequence_length"] == (
        1,
        64,
        64,
    )
    switch = default_dim_ranges({"max_sequence_length": None, "config": {}})
    assert switch["encoder_sequence_length"] == (1, 128, DEFAULT_MAX_SEQUENCE)
    assert switch["decoder_sequence_length"] == (1, 1, DEFAULT_MAX_SEQUENCE)
    assert switch["past_decoder_sequence_length"] == (1, 128, DEFAULT_MAX_SEQUENCE)


# reformer-crime-and-punishment's shape: hidden 256, feed-forward 512, 524,288 positions.
_REFORMER = {
    "family": "reformer",
    "dtype": "fp32",
    "max_sequence_length": 524288,
    "config": {"hidden_size": 256, "feed_forward_size": 512, "max_position_embeddings": 524288},
}
_REFORMER_ENTRY = {
    "name": "model",
    "inputs": [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
    ],
}


def test_the_default_max_profile_is_what_the_issue_measured():
    from bucketrt.trt.profiles import component_profiles, memory_estimate

    profile = component_profiles(_REFORMER, [_REFORMER_ENTRY], {})["model"]
    assert profile["input_ids"].max == (8, 524288)
    estimate = memory_estimate(_REFORMER, _REFORMER_ENTRY["inputs"], profile)
    assert estimate.activation_bytes == 4 << 30  # one [B·N, 256] float32 activation: 4 GiB
    assert estimate.total_bytes == 8 * 524288 * 4 * (4 * 256 + 512)  # 24 GiB


def test_default_profiles_shrink_to_the_memory_budget_batch_first():
    from bucketrt.trt.profiles import component_profiles, memory_estimate

    budget = 16 << 30
    profile = component_profiles(_REFORMER, [_REFORMER_ENTRY], {}, memory_budget=budget)["model"]
    # 24 GiB at 8 x 524288: batch 4 (12 GiB) fits; the sequence keeps its limit.
    assert profile["input_ids"] == profile["attention_mask"] == ShapeRange((1, 1), (1, 128), (4, 524288))
    assert memory_estimate(_REFORMER, _REFORMER_ENTRY["inputs"], profile).total_bytes <= budget
    # A GPU of 2 GiB: batch 1 (3 GiB), then sequences halved: 262,144 positions (1.5 GiB).
    small = component_profiles(_REFORMER, [_REFORMER_ENTRY], {}, memory_budget=2 << 30)["model"]
    assert small["input_ids"].max == (1, 262144)
    # fp16 exports hold half: twice the positions in the same budget (the model's limit).
    half = component_profiles(_REFORMER | {"dtype": "fp16"}, [_REFORMER_ENTRY], {}, memory_budget=2 << 30)["model"]
    assert half["input_ids"].max == (1, 524288)


def test_given_shapes_beyond_the_budget_are_an_error_before_building():
    from bucketrt.errors import BucketrtError
    from bucketrt.trt.profiles import component_profiles

    given = {"max": {"input_ids": (8, 524288)}}
    with pytest.raises(BucketrtError) as info:
        component_profiles(
            _REFORMER, [_REFORMER_ENTRY], given, memory_budget=4096 << 20, budget_source="--workspace 4096"
        )
    message = str(info.value)
    # As trtexec, a max alone is min and opt too: one shape.
    assert "the optimisation profile of model (input_ids 8x524288, attention_mask 8x524288) needs" in message
    assert (
        "needs about 24.0 GiB of activations at its max shapes (4,194,304 positions; each [B·N, 256] float32 "
        "activation is 4.0 GiB), more than the 4.0 GiB of --workspace 4096"
    ) in message
    assert "give smaller --max-shapes" in message


def test_a_config_without_a_hidden_width_is_not_estimated():
    from bucketrt.trt.profiles import component_profiles, memory_estimate

    manifest = _REFORMER | {"config": {"max_position_embeddings": 524288}}
    profile = component_profiles(manifest, [_REFORMER_ENTRY], {}, memory_budget=1)["model"]
    assert profile["input_ids"].max == (8, 524288)
    assert memory_estimate(manifest, _REFORMER_ENTRY["inputs"], profile) is None
