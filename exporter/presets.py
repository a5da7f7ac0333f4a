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


# An LSG BERT checkpoint's config.json (lsg-converter's defaults for the LSG fields); presets
# change sizes only.
_LSG_BERT = dict(
    model_type="bert",
    architectures=["LSGBertForMaskedLM"],
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    type_vocab_size=2,
    pad_token_id=0,
    block_size=128,
    sparse_block_size=128,
    sparsity_factor=2,
    sparsity_type="norm",
    num_global_tokens=1,
    mask_first_token=False,
    pool_with_global=True,
    adaptive=True,
    lsh_num_pre_rounds=1,
)

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
        # LSG presets: config.json content of an LSG BERT checkpoint (model_type bert, LSG classes).
        Preset(
            "lsg-bert-4096",
            "lsg",
            "ccdv/lsg-bert-base-uncased-4096 architecture (BERT base, 4096 positions, block 128, norm "
            "sparsity, 1 global token), random weights",
            dict(_LSG_BERT, max_position_embeddings=4096),
        ),
        Preset(
            "lsg-bert-tiny",
            "lsg",
            "2 layers, hidden 64, 4 heads, 512 positions, block 16, norm sparsity, random weights",
            dict(
                _LSG_BERT,
                vocab_size=1000,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=512,
                block_size=16,
                sparse_block_size=16,
            ),
        ),
        Preset(
            "reformer-crime-and-punishment",
            "reformer",
            "the google/reformer-crime-and-punishment architecture (6 layers local/lsh x3, hidden 256, 2 heads "
            "of 64, chunks of 64, factorised buckets [64, 128], 1 hash, axial positions [512, 1024], causal LM, "
            "vocab 320), random weights",
            {
                "attention_head_size": 64,
                "attn_layers": ["local", "lsh", "local", "lsh", "local", "lsh"],
                "axial_pos_embds": True,
                "axial_pos_embds_dim": [64, 192],
                "axial_pos_shape": [512, 1024],
                "chunk_size_feed_forward": 0,
                "chunk_size_lm_head": 0,
                "eos_token_id": 2,
                "feed_forward_size": 512,
                "hash_seed": None,
                "hidden_act": "relu",
                "hidden_size": 256,
                "is_decoder": True,
                "layer_norm_eps": 1e-12,
                "local_attn_chunk_length": 64,
                "local_num_chunks_after": 0,
                "local_num_chunks_before": 1,
                "lsh_attn_chunk_length": 64,
                "lsh_num_chunks_after": 0,
                "lsh_num_chunks_before": 1,
                "max_position_embeddings": 524288,
                "num_attention_heads": 2,
                "num_buckets": [64, 128],
                "num_hashes": 1,
                "num_hidden_layers": 6,
                "pad_token_id": 0,
                "vocab_size": 320,
            },
        ),
        Preset(
            "reformer-tiny",
            "reformer",
            "2 layers (local, lsh), hidden 32, 2 heads of 16, chunks of 16, 8 buckets, 2 hashes, axial "
            "positions [16, 32], causal LM, vocab 320, random weights",
            {
                "attention_head_size": 16,
                "attn_layers": ["local", "lsh"],
                "axial_pos_embds_dim": [16, 16],
                "axial_pos_shape": [16, 32],
                "feed_forward_size": 64,
                "hidden_size": 32,
                "is_decoder": True,
                "local_attn_chunk_length": 16,
                "lsh_attn_chunk_length": 16,
                "max_position_embeddings": 512,
                "num_attention_heads": 2,
                "num_buckets": 8,
                "num_hashes": 2,
                "num_hidden_layers": 2,
                "vocab_size": 320,
            },
        ),
    )
}
