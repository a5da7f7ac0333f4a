"""LSG's configuration: recognising an LSG checkpoint and reading its attention settings.

LSG checkpoints (ccdv/lsg-*, lsg-converter's save_pretrained) carry a plain `model_type` ("bert",
"roberta") plus LSG's own fields and an `auto_map`/`architectures` naming LSG classes. The defaults
below are those of lsg-converter 0.1.9's LSGBertConfig/LSGRobertaConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

from bucketrt.errors import LSGConfigError

SPARSITY_TYPES = ("none", "norm", "pooling", "lsh", "stride", "block_stride", "bos_pooling")
FAMILIES = ("bert", "roberta")
DEFAULTS = dict(
    adaptive=True,
    block_size=128,
    lsh_num_pre_rounds=1,
    mask_first_token=False,
    num_global_tokens=1,
    pool_with_global=True,
    sparse_block_size=128,
    sparsity_factor=2,
    sparsity_type="norm",
)
# The original's global embedding table has 512 rows whatever num_global_tokens is.
GLOBAL_EMBEDDING_ROWS = 512


def is_lsg(config: dict) -> bool:
    """True for an LSG checkpoint's config.json, False for plain BERT/RoBERTa and everything else."""
    names = list(config.get("architectures") or []) + [str(v) for v in (config.get("auto_map") or {}).values()]
    if any(n.split(".")[-1].startswith("LSG") or "modeling_lsg_" in n for n in names):
        return True
    return str(config.get("model_type", "")).startswith("lsg")


@dataclass(frozen=True)
class LSGSettings:
    """The attention settings of an LSG model, normalised the way the original's config class does."""

    family: str
    block_size: int
    sparse_block_size: int
    sparsity_factor: int
    sparsity_type: str
    num_global_tokens: int
    mask_first_token: bool
    pool_with_global: bool
    lsh_num_pre_rounds: int
    adaptive: bool
    num_heads: int
    head_dim: int

    @property
    def has_sparse(self) -> bool:
        return self.sparsity_type != "none" and self.sparse_block_size > 0 and self.sparsity_factor > 0

    @property
    def sparse_stride(self) -> int:
        """Sparse tokens per block (the original's `block_size // sparsity_factor`)."""
        return self.block_size // self.sparsity_factor

    @property
    def chunk(self) -> int:
        """Tokens per selection chunk for norm and lsh (the original's min(block_size, sparse_block_size))."""
        return min(self.block_size, self.sparse_block_size)

    @property
    def lsh_rounds(self) -> tuple[int, ...]:
        """Bucket counts of the lsh rounds: the pre-rounds keep `chunk` buckets, the last one chunk / factor."""
        return (self.chunk,) * self.lsh_num_pre_rounds + (self.chunk // self.sparsity_factor,)


def settings(config: dict) -> LSGSettings:
    """Reads and validates the LSG fields of a config.json dict; raises LSGConfigError."""
    family = config.get("model_type")
    if family not in FAMILIES:
        raise LSGConfigError(
            f"LSG model_type '{family}' is not supported; bucketrt's LSG port covers {', '.join(FAMILIES)}"
        )
    get = lambda key: config.get(key, DEFAULTS[key])  # noqa: E731
    sparsity = get("sparsity_type")
    # The original maps None and unknown names to "no sparse attention" with a warning; an unknown
    # name is far more likely a typo, so it is an error here.
    sparsity = "none" if sparsity is None else sparsity
    if sparsity not in SPARSITY_TYPES:
        raise LSGConfigError(f"sparsity_type '{sparsity}' is not one of {', '.join(SPARSITY_TYPES)}")
    heads, hidden = config.get("num_attention_heads", 12), config.get("hidden_size", 768)
    if heads < 1 or hidden % heads:
        raise LSGConfigError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    block, sparse_block, factor = get("block_size"), get("sparse_block_size"), get("sparsity_factor")
    if block < 1:
        raise LSGConfigError(f"block_size must be >= 1, got {block}")
    if sparse_block < 0 or factor < 0:
        raise LSGConfigError("sparse_block_size and sparsity_factor must be >= 0")
    if factor > 0 and block % factor:
        raise LSGConfigError(f"block_size {block} must be a multiple of sparsity_factor {factor}")
    chunk = min(block, sparse_block)
    if sparsity in ("norm", "lsh") and factor > 1 and sparse_block > 0:
        if block % chunk or chunk % factor:
            raise LSGConfigError(
                f"sparsity_type '{sparsity}' needs block_size ({block}) to be a multiple of "
                f"min(block_size, sparse_block_size) ({chunk}) and that of sparsity_factor ({factor})"
            )
    if sparsity == "lsh" and factor > 1 and sparse_block > 0 and factor != sparse_block and chunk // factor < 2:
        raise LSGConfigError(
            f"sparsity_type 'lsh' needs min(block_size, sparse_block_size) // sparsity_factor >= 2 buckets, "
            f"got {chunk} // {factor}"
        )
    stride = block // factor if factor > 0 else 0
    if stride > 1 and stride % 2:
        # The original's sparse windows are only consistent for an even block_size // sparsity_factor
        # (or 1); other values give windows that do not line up with the blocks.
        raise LSGConfigError(f"block_size // sparsity_factor = {stride} is odd; LSG needs it even or 1")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise LSGConfigError("LSG attention needs position_embedding_type 'absolute'")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise LSGConfigError("causal (decoder) LSG models are not supported: only encoders (is_decoder=false)")
    globals_ = min(max(get("num_global_tokens"), 1), GLOBAL_EMBEDDING_ROWS)  # clamped like the original
    mask_first = bool(get("mask_first_token"))
    pool = bool(get("pool_with_global")) or mask_first  # the original forces it with mask_first_token
    rounds = get("lsh_num_pre_rounds")
    if rounds < 0:
        raise LSGConfigError(f"lsh_num_pre_rounds must be >= 0, got {rounds}")
    return LSGSettings(
        family,
        block,
        sparse_block,
        factor,
        sparsity,
        globals_,
        mask_first,
        pool,
        rounds,
        bool(get("adaptive")),
        heads,
        hidden // heads,
    )
