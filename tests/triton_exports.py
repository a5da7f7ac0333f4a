"""The tiny exports the Triton tests serve, made once per pytest process (tests/test_triton_server.py and
tests/test_triton_repository.py)."""

from __future__ import annotations

from pathlib import Path

# name -> (preset, export keyword arguments)
TINY = {
    "yoso": ("yoso-tiny", {"config_overrides": {"use_expectation": False}}),
    "reformer": ("reformer-tiny", {}),
    # One layer per stack (both sparse) keeps the export short; untied embeddings keep random weights
    # from greedy-decoding one token forever. Its encoder_model serves as the Switch encoder.
    "switch_s2s": (
        "switch-tiny",
        {"config_overrides": {"tie_word_embeddings": False, "num_layers": 1, "num_decoder_layers": 1}},
    ),
    # A mixture-of-experts causal LM with a key/value cache (TopKExperts): one layer keeps the export
    # short; larger random weights keep greedy decoding from repeating one token.
    "moe": (
        "mixtral-tiny",
        {"config_overrides": {"num_hidden_layers": 1, "initializer_range": 0.2, "tie_word_embeddings": False}},
    ),
}
# The same weights with past and present one buffer, which the served loop writes in place.
TINY["moe_shared"] = (TINY["moe"][0], {**TINY["moe"][1], "options": {"shared_kv_buffer": True}})

_MADE: dict[str, Path] = {}


def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    """{name: export folder}, exported at seed 0 into the session's temporary folder on first use."""
    from bucketrt.exporter import export

    if not _MADE:
        root = tmp_path_factory.mktemp("triton_exports")
        for name, (preset, kwargs) in TINY.items():
            export(preset, root / name, seed=0, **kwargs)
            _MADE[name] = root / name
    return dict(_MADE)
