"""The tiny exports the Triton tests serve, made once per pytest process (tests/test_triton_server.py;
tests/test_triton_repository.py exports the same set and may share it)."""

from __future__ import annotations

from pathlib import Path

# name -> (preset, export keyword arguments)
TINY = {
    "yoso": ("yoso-tiny", {"config_overrides": {"use_expectation": False}}),
    "reformer": ("reformer-tiny", {}),
    "switch_encoder": ("switch-tiny", {"task": "feature-extraction-encoder"}),
    # Untied embeddings: with random tied weights greedy decoding repeats one token.
    "switch_s2s": ("switch-tiny", {"config_overrides": {"tie_word_embeddings": False}}),
}

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
