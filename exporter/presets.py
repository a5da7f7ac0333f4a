"""Built-in model presets: architectures with random weights, for demos, tests and benchmarks.

A preset needs no download: its weights are drawn from the export seed, so the same seed always
gives the same model (and `load_reference` can rebuild it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # a model family's name (exporter/family.py)
    description: str
    # Arguments for the family's config class; everything not named keeps the class's default.
    config: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "yoso-4096",
            "yoso",
            "YosoConfig() defaults: the uw-madison/yoso-4096 architecture (12 layers, hidden 768, "
            "4096 positions, YOSO-E), random weights",
            {},
        ),
        Preset(
            "yoso-tiny",
            "yoso",
            "2 layers, hidden 64, 4 heads of 16 (padded to 32 for hashing), LSH attention with 16 "
            "hashes of 9 bits, random weights",
            {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 128,
                "vocab_size": 1000,
                "max_position_embeddings": 512,
                "hash_code_len": 9,
                "num_hash": 16,
                "use_expectation": False,
            },
        ),
        Preset(
            "switch-base-8",
            "switch",
            "the google/switch-base-8 architecture: d_model 768, d_ff 3072, 12+12 layers (every other "
            "one sparse), 12 heads of 64, 8 experts of capacity 64, relu, router in float32; random weights",
            {
                "vocab_size": 32128,
                "d_model": 768,
                "d_kv": 64,
                "d_ff": 3072,
                "num_layers": 12,
                "num_decoder_layers": 12,
                "num_sparse_encoder_layers": 6,
                "num_sparse_decoder_layers": 6,
                "num_heads": 12,
                "num_experts": 8,
                "expert_capacity": 64,
                "dense_act_fn": "relu",
                "router_dtype": "float32",
                "decoder_start_token_id": 0,
                "architectures": ["SwitchTransformersForConditionalGeneration"],
            },
        ),
        Preset(
            "switch-tiny",
            "switch",
            "2+2 layers (the second of each sparse), d_model 32, d_ff 64, 4 heads of 8, 4 experts of "
            "capacity 8, vocab 256; random weights",
            {
                "vocab_size": 256,
                "d_model": 32,
                "d_kv": 8,
                "d_ff": 64,
                "num_layers": 2,
                "num_decoder_layers": 2,
                "num_sparse_encoder_layers": 1,
                "num_sparse_decoder_layers": 1,
                "num_heads": 4,
                "num_experts": 4,
                "expert_capacity": 8,
                "decoder_start_token_id": 0,
                "architectures": ["SwitchTransformersForConditionalGeneration"],
            },
        ),
    )
}
