"""YOSO's self-attention, rewritten so that it exports: bucketrt ops for LSH, standard ops for YOSO-E.

`patch_model` swaps every transformers `YosoSelfAttention` for `BucketrtYosoSelfAttention`, which
keeps the original query/key/value projections and depthwise convolution (same parameters, same
names) and reproduces Hugging Face's eval-mode maths:

* the input mask goes through HF's `1.0 + mask / 10000.0` and `.int()`, which makes it all ones, so
  padding is never masked inside attention (`mask_padding=True` uses the real mask instead);
* LSH mode (use_expectation=False): q and k are hashed with `SignHash` and the values summed per
  bucket with `LSHCumulation`. HF zero-pads head dims below 32 to 32 before hashing; the Hadamard
  transform needs a power of two, so we pad to max(32, next power of two) - the same as HF for
  every power-of-two head dim. Values are not padded (the op takes any width). The random
  projections, which HF's kernels draw on every call, are drawn once at export (one per layer and
  head, shared across the batch) and stored in the model as buffers;
* YOSO-E (use_expectation=True): q and k are L2-normalised and the expectation
  (1 - acos(q.k)/pi)^hash_code_len weights the values. q.k is clamped to [-1, 1] first; HF's
  unclamped acos gives NaN when rounding pushes q.k of near-duplicate vectors above 1;
* in both modes the context is L2-normalised and, with conv_window, HF's depthwise convolution of
  (value * attention_mask) is added.

Deviations from HF, all documented: the clamp above; head dims that are not powers of two (e.g. 48)
are padded to the next power of two where HF's fast_hash kernel gives wrong codes; with
use_fast_hash=False HF's `hashing` returns the key codes for the queries too (a bug) - we hash the
queries with their own codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bucketrt.errors import BucketrtError
from bucketrt.export_format.tasks import Task, task_table
from bucketrt.ops.catalogue import LSH_CUMULATION, SIGN_HASH, hadamard_parts
from bucketrt.ops.dispatch import call

from ..family import Family, Patch, register
from ..presets import Preset

# HF pads head dims below the GPU warp size before hashing.
_HF_MIN_HASH_DIM = 32
# The spec's bound (one definition for every backend), checked here to say how to fix the config.
_MAX_HASH_CODE_LEN = SIGN_HASH.attribute("hash_code_len").maximum


@dataclass(frozen=True)
class Geometry:
    """Everything about a layer's attention that follows from the config."""

    mode: str  # "lsh" | "expectation"
    num_heads: int
    head_dim: int
    hash_code_len: int
    num_hash: int
    transform: str  # "hadamard" | "gaussian"
    hash_dim: int  # width of the hashed q/k (padded for hadamard)

    @property
    def parts(self) -> int:
        return hadamard_parts(self.hash_dim, self.num_hash, self.hash_code_len)

    @property
    def projection_shape(self) -> tuple[int, int, int]:
        if self.transform == "hadamard":
            return (self.num_heads, 3 * self.parts, self.hash_dim)
        return (self.num_heads, self.hash_dim, self.num_hash * self.hash_code_len)


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def geometry(config) -> Geometry:
    """Validates the config for export and derives the attention geometry; raises BucketrtError."""
    heads, hidden = config.num_attention_heads, config.hidden_size
    if heads < 1 or hidden < 1 or hidden % heads:
        raise BucketrtError(
            f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}",
            "choose hidden_size and num_attention_heads so that hidden_size % num_attention_heads == 0",
        )
    if config.conv_window is not None and (config.conv_window < 1 or config.conv_window % 2 == 0):
        raise BucketrtError(
            f"conv_window={config.conv_window} is not supported; it must be a positive odd number or null",
            "HF's convolution pads conv_window // 2 on each side, so an even window changes the sequence length",
        )
    head_dim = hidden // heads
    mode = "expectation" if config.use_expectation else "lsh"
    transform = "hadamard" if config.use_fast_hash else "gaussian"
    length, num_hash = config.hash_code_len, config.num_hash
    if transform == "hadamard":
        hash_dim = max(_HF_MIN_HASH_DIM, _next_power_of_two(head_dim))
    else:
        hash_dim = head_dim  # zero padding changes nothing for a dense projection
    if mode == "lsh":
        if num_hash < 1:
            raise BucketrtError(f"num_hash={num_hash} is not supported; it must be at least 1")
        if length < 1 or length > _MAX_HASH_CODE_LEN:
            raise BucketrtError(
                f"hash_code_len={length} is not supported; LSH codes have 1 to {_MAX_HASH_CODE_LEN} bits",
                "lower hash_code_len (YOSO uses 8 or 9), e.g. --config-override hash_code_len=9",
            )
        if transform == "hadamard" and length > hash_dim:
            raise BucketrtError(
                f"hash_code_len={length} exceeds the hashed head dim {hash_dim}",
                "lower hash_code_len or use gaussian hashing (use_fast_hash=false)",
            )
    return Geometry(mode, heads, head_dim, length, num_hash, transform, hash_dim)


def sample_projections(config, seed: int) -> list[torch.Tensor]:
    """The random projections of every layer, drawn from `seed` in a fixed order (layer by layer).

    Hadamard: [heads, 3*P, hash_dim] of +-1 (SignHash's diagonals). Gaussian: [heads, head_dim,
    num_hash*hash_code_len] standard normal. Only LSH mode has projections.
    """
    geo = geometry(config)
    if geo.mode != "lsh":
        return []
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(config.num_hidden_layers):
        if geo.transform == "hadamard":
            bits = torch.randint(0, 2, geo.projection_shape, generator=generator, dtype=torch.int64)
            out.append(bits.to(torch.float32) * 2 - 1)
        else:
            out.append(torch.randn(geo.projection_shape, generator=generator, dtype=torch.float32))
    return out


def _normalize(x: torch.Tensor) -> torch.Tensor:
    # In float32, as HF: its eps (1e-12) underflows to 0 in float16, where an all-zero row (a query
    # that met no key in any bucket) would become 0/0 = NaN. A float32 model exports no cast.
    return nn.functional.normalize(x.float(), p=2, dim=-1).to(x.dtype)


class BucketrtYosoSelfAttention(nn.Module):
    """Drop-in replacement for transformers' YosoSelfAttention (eval mode; see the module doc)."""

    def __init__(self, original: nn.Module, geo: Geometry, projection: torch.Tensor | None, mask_padding: bool):
        super().__init__()
        # The original's parameters, under the same names, so state dicts stay compatible.
        self.query, self.key, self.value = original.query, original.key, original.value
        self.use_conv = bool(getattr(original, "use_conv", False))
        if self.use_conv:
            self.conv = original.conv
        self.geo = geo
        self.mask_padding = mask_padding
        if geo.mode == "lsh":
            if projection is None or tuple(projection.shape) != geo.projection_shape:
                raise ValueError(f"projection must have shape {geo.projection_shape}")
            self.register_buffer("projection", projection.to(torch.float32).contiguous())
        else:
            self.projection = None

    def extra_repr(self) -> str:
        g = self.geo
        text = f"mode={g.mode}, heads={g.num_heads}, head_dim={g.head_dim}, hash_code_len={g.hash_code_len}"
        if g.mode == "lsh":
            text += f", num_hash={g.num_hash}, transform={g.transform}, hash_dim={g.hash_dim}"
        return text + f", mask_padding={self.mask_padding}"

    def _masks(self, attention_mask: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """[batch*heads, length] int32 query/key mask."""
        if self.mask_padding:
            mask = (attention_mask != 0).to(torch.int32)
        else:
            # HF's arithmetic, kept literally: it turns 0/1 masks into all ones.
            mask = (1.0 + attention_mask / 10000.0).to(torch.int32)
        heads = self.geo.num_heads
        return mask[:, None, :].expand(batch, heads, length).reshape(batch * heads, length)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        g = self.geo
        batch, length, _ = hidden_states.shape
        heads, head_dim = g.num_heads, g.head_dim
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=hidden_states.dtype, device=hidden_states.device)

        def split(x):
            return x.view(batch, length, heads, head_dim).transpose(1, 2)

        query = split(self.query(hidden_states))
        key = split(self.key(hidden_states))
        value = split(self.value(hidden_states))
        if self.use_conv:
            conv_value = self.conv(value * attention_mask[:, None, :, None])

        query = query.reshape(batch * heads, length, head_dim)
        key = key.reshape(batch * heads, length, head_dim)
        value = value.reshape(batch * heads, length, head_dim)
        mask = self._masks(attention_mask, batch, length)

        if g.mode == "expectation":
            query, key = _normalize(query), _normalize(key)
            cosine = torch.matmul(query, key.transpose(-1, -2)).clamp(-1.0, 1.0)
            expectation = (1 - torch.acos(cosine) / math.pi) ** g.hash_code_len
            expectation = expectation * mask[:, :, None] * mask[:, None, :]
            context = torch.matmul(expectation, value)
        else:
            if g.hash_dim > head_dim:
                pad = (0, g.hash_dim - head_dim)
                query, key = nn.functional.pad(query, pad), nn.functional.pad(key, pad)
            hash_attrs = dict(num_hash=g.num_hash, hash_code_len=g.hash_code_len, transform=g.transform)
            query_hash = call(SIGN_HASH, mask, query, self.projection, **hash_attrs)
            key_hash = call(SIGN_HASH, mask, key, self.projection, **hash_attrs)
            context = call(
                LSH_CUMULATION, mask, query_hash, mask, key_hash, value, hashtable_capacity=2**g.hash_code_len
            )

        context = _normalize(context).reshape(batch, heads, length, head_dim)
        if self.use_conv:
            context = context + conv_value
        context = context.permute(0, 2, 1, 3).reshape(batch, length, heads * head_dim)
        return (context, context) if output_attentions else (context,)


@dataclass(frozen=True)
class PatchInfo:
    mode: str
    transform: str | None
    hash_dim: int | None
    projection_shape: tuple[int, ...] | None
    projections: tuple[torch.Tensor, ...]  # per layer; none in expectation mode
    layers: int


def patch_model(model: nn.Module, seed: int, mask_padding: bool = False) -> PatchInfo:
    """Replaces every YosoSelfAttention of `model` in place (layer order) and puts it in eval mode."""
    from transformers.models.yoso.modeling_yoso import YosoSelfAttention

    config = model.config
    geo = geometry(config)
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, YosoSelfAttention)]
    if len(targets) != config.num_hidden_layers:
        raise BucketrtError(
            f"found {len(targets)} YOSO attention layers, expected num_hidden_layers={config.num_hidden_layers}"
        )
    projections = sample_projections(config, seed)
    for index, (name, module) in enumerate(targets):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        projection = projections[index] if projections else None
        setattr(parent, attr, BucketrtYosoSelfAttention(module, geo, projection, mask_padding))
    model.eval()
    lsh = geo.mode == "lsh"
    return PatchInfo(
        mode=geo.mode,
        transform=geo.transform if lsh else None,
        hash_dim=geo.hash_dim if lsh else None,
        projection_shape=geo.projection_shape if lsh else None,
        projections=tuple(projections),
        layers=len(targets),
    )


@register
class YosoFamily(Family):
    name = "yoso"
    model_types = ("yoso",)
    order = 10
    config_class = "YosoConfig"
    tasks = task_table(
        "Yoso",
        "feature-extraction",
        "fill-mask",
        "text-classification",
        "token-classification",
        "question-answering",
        "multiple-choice",
    )
    # HF's YOSO never masks padding inside attention; mask_padding=True does.
    options = {"mask_padding": False}
    option_flags = {
        "mask_padding": "YOSO: mask padded positions inside attention (--option mask_padding=true). Default: like "
        "Hugging Face, whose YOSO never masks them."
    }
    # A row's answer is bit-identical inside a same-shape batch and alone
    # (tests/test_triton_repository.py checks it).
    batch_rows_independent = True
    presets = {
        "yoso-4096": Preset(
            "YosoConfig() defaults: the uw-madison/yoso-4096 architecture (12 layers, hidden 768, "
            "4096 positions, YOSO-E), random weights",
            {},
        ),
        "yoso-tiny": Preset(
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
    }

    def check_config(self, config) -> None:
        geometry(config)

    def patch(self, model, task: Task, seed: int, options: dict) -> Patch:
        mask_padding = options["mask_padding"]
        info = patch_model(model, seed, mask_padding)
        projections = None
        if info.mode == "lsh":
            projections = {
                "transform": info.transform,
                "shape_per_layer": list(info.projection_shape),
                "layers": info.layers,
                "hash_dim": info.hash_dim,
                "sampling": "torch.Generator('cpu').manual_seed(seed); layer by layer; hadamard: "
                "randint(0, 2) * 2 - 1, gaussian: randn",
            }
        manifest = {"mask_padding": mask_padding, "projections": projections}
        return Patch(info.mode, self.components(model, task), manifest, info.projections)
