"""Reformer: LSH and local attention through bucketrt's ArgmaxHash and SortedChunkAttention.

`ReformerGraph` computes what Hugging Face's Reformer computes in eval mode, from the HF model's
own submodules and weights, with nothing that depends on a Python branch over the sequence length:

* the padding to a multiple of the chunk lengths that HF applies in eval (only when the sequence is
  longer than the smallest chunk length) is arithmetic on the symbolic length, and its removal a
  slice; the padded positions carry the pad token and mask 0, as in HF;
* each LSH layer hashes with ArgmaxHash (rotations sampled at export: HF's own draw when
  `hash_seed` is set) and attends with SortedChunkAttention, which itself falls back to plain
  attention when the (padded) sequence fits one chunk, as HF does;
* each local layer is SortedChunkAttention with one round of constant buckets (the identity sort);
* axial position embeddings are two gathers (row p // A1, column p % A1); a sequence longer than
  the model's positions is rejected by SortedChunkAttention's max_length with a clear error;
* reversible residual layers in eval are the plain sums (attn += Attention(h); h += FF(attn)), and
  chunked feed-forward / LM-head computation is the unchunked one (same maths).
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from functools import reduce
from operator import mul

import torch
from torch import nn

from bucketrt.errors import BucketrtError
from bucketrt.export_format.tasks import BATCH, SEQUENCE, Task, task_table
from bucketrt.ops.catalogue import ARGMAX_HASH, SORTED_CHUNK_ATTENTION
from bucketrt.ops.dispatch import call

from ..family import EXAMPLE_BATCH, EXAMPLE_SEQUENCE, Component, Family, Patch, register
from ..presets import Preset

# Reformer's key normalisation epsilon (LSHSelfAttention._len_norm).
_LEN_NORM_EPS = 1e-6


# -- configuration facts ----------------------------------------------------------------------


def chunk_lengths(config) -> tuple[int, int]:
    """(least common multiple, minimum) of the chunk lengths of the attention types in use."""
    lengths = []
    if "lsh" in config.attn_layers:
        lengths.append(config.lsh_attn_chunk_length)
    if "local" in config.attn_layers:
        lengths.append(config.local_attn_chunk_length)
    return math.lcm(*lengths), min(lengths)


def max_length(config) -> int:
    """The longest (padded) sequence HF's Reformer accepts in eval: max_position_embeddings and,
    with axial position embeddings, the product of axial_pos_shape."""
    limit = config.max_position_embeddings
    if config.axial_pos_embds:
        limit = min(limit, reduce(mul, config.axial_pos_shape))
    return limit


def resolve_num_buckets(config, length: int):
    """HF's choice of num_buckets for a sequence of `length` when config.num_buckets is None
    (LSHSelfAttention._set_num_buckets: about 2 * length / chunk, a power of two, factorised in two
    when above 2 * max(sqrt(max_positions / chunk), chunk))."""
    chunk = config.lsh_attn_chunk_length
    power = (2 * (length // chunk)).bit_length() - 1
    buckets = 2**power
    limit = 2 * max(int((config.max_position_embeddings // chunk) ** 0.5), chunk)
    if buckets > limit:
        return [2 ** (power // 2), 2 ** (power - power // 2)]
    return buckets


def bucket_sizes(num_buckets) -> list[int]:
    return [num_buckets] if isinstance(num_buckets, int) else [int(n) for n in num_buckets]


def check_config(config) -> None:
    """What bucketrt cannot export, as BucketrtError."""
    types = set(config.attn_layers)
    if not types or types - {"lsh", "local"}:
        raise BucketrtError(f"attn_layers must be 'lsh' or 'local', got {config.attn_layers}")
    if len(config.attn_layers) != config.num_hidden_layers:
        raise BucketrtError(
            f"attn_layers has {len(config.attn_layers)} entries but num_hidden_layers is {config.num_hidden_layers}"
        )
    if config.num_buckets is not None:
        for size in bucket_sizes(config.num_buckets):
            if size < 2 or size % 2:
                raise BucketrtError(f"num_buckets must be even numbers >= 2, got {config.num_buckets}")
    if config.axial_pos_embds and len(config.axial_pos_shape) != 2:
        raise BucketrtError(
            f"axial_pos_shape must have two factors (as HF requires in eval), got {config.axial_pos_shape}"
        )
    for name in ("lsh_attn_chunk_length", "local_attn_chunk_length"):
        if getattr(config, name) is None or getattr(config, name) < 1:
            raise BucketrtError(f"{name} must be a positive integer, got {getattr(config, name)}")


# -- rotations --------------------------------------------------------------------------------


@dataclass
class Rotations:
    num_buckets: list[int]  # bucket sizes (factors)
    resolved_from: int | None  # the length num_buckets was resolved from (config had None)
    tensors: list[torch.Tensor]  # per LSH layer, [H, D, num_hashes * sum(sizes) / 2]
    source: str  # how they were drawn


def sample_rotations(config, seed: int, length: int | None = None) -> Rotations:
    """The random rotations of every LSH layer.

    With hash_seed set, HF reseeds torch's global generator with it before each hashing and draws
    randn([H, D, num_hashes, sum(sizes) / 2]): every layer gets the same draw, reproduced here (the
    global generator's state is restored afterwards). Without it, HF draws fresh rotations at every
    call; bucketrt draws each layer's once, from a generator seeded with `seed`.
    """
    resolved_from = None
    num_buckets = config.num_buckets
    if num_buckets is None:
        resolved_from = length or max_length(config)
        num_buckets = resolve_num_buckets(config, resolved_from)
    sizes = bucket_sizes(num_buckets)
    shape = (config.num_attention_heads, config.attention_head_size, config.num_hashes, sum(sizes) // 2)
    layers = [i for i, kind in enumerate(config.attn_layers) if kind == "lsh"]
    if config.hash_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.hash_seed)
            draw = torch.randn(shape, dtype=torch.float32)
        tensors = [draw.reshape(shape[0], shape[1], -1).clone() for _ in layers]
        source = f"torch.manual_seed(hash_seed={config.hash_seed}); randn{list(shape)}: HF's own rotations, shared by all layers"
    else:
        generator = torch.Generator().manual_seed(seed)
        tensors = [torch.randn(shape, generator=generator).reshape(shape[0], shape[1], -1) for _ in layers]
        source = f"torch.Generator('cpu').manual_seed({seed}); randn{list(shape)} per LSH layer in order"
    return Rotations(sizes, resolved_from, tensors, source)


# -- the graph --------------------------------------------------------------------------------


def _heads(x: torch.Tensor, batch, heads: int, size: int) -> torch.Tensor:
    """[B*N, H*D] -> [B, H, N, D]."""
    return x.reshape(batch, -1, heads, size).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, D] -> [B*N, H*D]."""
    return x.transpose(1, 2).reshape(x.shape[0] * x.shape[2], -1)


class ReformerGraph(nn.Module):
    """HF's Reformer (any task head) in eval, computed with bucketrt ops; see the module doc.

    forward(input_ids, attention_mask) returns the task's outputs as a tuple.
    """

    def __init__(self, model: nn.Module, task: str, rotations: Rotations):
        super().__init__()
        config = model.config
        self.config = config
        self.model = model
        self.task = task
        self.reformer = model.reformer if hasattr(model, "reformer") else model
        self.lcm, self.min_chunk = chunk_lengths(config)
        self.max_length = max_length(config)
        self.heads, self.head_size = config.num_attention_heads, config.attention_head_size
        self.register_buffer("bucket_sizes", torch.tensor(rotations.num_buckets, dtype=torch.int32), persistent=False)
        lsh = iter(rotations.tensors)
        for i, kind in enumerate(config.attn_layers):
            if kind == "lsh":
                self.register_buffer(f"rotations_{i}", next(lsh).float().contiguous(), persistent=False)

    # HF pads (in eval) to a multiple of the chunk lengths' lcm, only when longer than the smallest
    # chunk; as arithmetic on the symbolic length: pad = (-N mod lcm) * min(1, N // (min_chunk + 1)).
    def _padding(self, length):
        return ((self.lcm - length % self.lcm) % self.lcm) * torch.sym_min(1, length // (self.min_chunk + 1))

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeddings = self.reformer.embeddings
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        words = embeddings.word_embeddings(input_ids)
        table = embeddings.position_embeddings
        if self.config.axial_pos_embds:
            rows, cols = self.config.axial_pos_shape
            w0 = table.weights[0].reshape(rows, -1)
            w1 = table.weights[1].reshape(cols, -1)
            # Clamped so that the gathers stay in range: a longer sequence is rejected by the
            # attention's max_length, with a message that says why.
            row = torch.clamp(positions // cols, max=rows - 1)
            pos = torch.cat([w0[row], w1[positions % cols]], dim=-1)
        else:
            pos = table.embedding(torch.clamp(positions, max=self.config.max_position_embeddings - 1))
        return words + pos[None]

    def _lsh(self, attn, i: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        config = self.config
        batch = mask.shape[0]
        qk = _heads(attn.query_key(hidden), batch, self.heads, self.head_size)
        value = _heads(attn.value(hidden), batch, self.heads, self.head_size)
        key = qk * torch.rsqrt(qk.pow(2).mean(-1, keepdim=True) + _LEN_NORM_EPS) / math.sqrt(self.head_size)
        buckets = call(
            ARGMAX_HASH, mask, qk, getattr(self, f"rotations_{i}"), self.bucket_sizes, num_hash=config.num_hashes
        )
        out = call(
            SORTED_CHUNK_ATTENTION,
            qk,
            key,
            value,
            mask,
            buckets,
            chunk_length=config.lsh_attn_chunk_length,
            chunks_before=config.lsh_num_chunks_before,
            chunks_after=config.lsh_num_chunks_after,
            causal=int(bool(config.is_decoder)),
            mask_self=1,
            max_length=self.max_length,
        )
        return _merge(out)

    def _local(self, attn, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        config = self.config
        batch = mask.shape[0]
        query = _heads(attn.query(hidden), batch, self.heads, self.head_size)
        key = _heads(attn.key(hidden), batch, self.heads, self.head_size) / math.sqrt(self.head_size)
        value = _heads(attn.value(hidden), batch, self.heads, self.head_size)
        # One round, every position in bucket 0: the stable sort is the identity (local attention).
        buckets = torch.zeros_like(mask)[:, None, None, :].expand(-1, self.heads, 1, -1)
        out = call(
            SORTED_CHUNK_ATTENTION,
            query,
            key,
            value,
            mask,
            buckets,
            chunk_length=config.local_attn_chunk_length,
            chunks_before=config.local_num_chunks_before,
            chunks_after=config.local_num_chunks_after,
            causal=int(bool(config.is_decoder)),
            mask_self=0,
            max_length=self.max_length,
        )
        return _merge(out)

    def sequence_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        pad = self._padding(length)
        input_ids = nn.functional.pad(input_ids, (0, pad), value=self.config.pad_token_id or 0)
        mask = nn.functional.pad((attention_mask != 0).to(torch.int32), (0, pad), value=0)
        # Rows of [B*N, hidden]: the linear layers become 2-D products, which ONNX Runtime fuses with
        # their bias (Gemm) and runs without broadcasting.
        hidden = self._embed(input_ids)
        batch = hidden.shape[0]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        # Reversible residual layers, forward only: two streams, both starting at the embeddings.
        attn_stream = hidden
        for i, layer in enumerate(self.reformer.encoder.layers):
            normed = layer.attention.layer_norm(hidden)
            attn = layer.attention.self_attention
            if self.config.attn_layers[i] == "lsh":
                context = self._lsh(attn, i, normed, mask)
            else:
                context = self._local(attn, normed, mask)
            attn_stream = attn_stream + layer.attention.output.dense(context)
            hidden = hidden + layer.feed_forward.forward_chunk(attn_stream)
        out = self.reformer.encoder.layer_norm(torch.cat([attn_stream, hidden], dim=-1))
        return out.reshape(batch, -1, out.shape[-1])[:, :length]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        sequence = self.sequence_output(input_ids, attention_mask)
        if self.task == "feature-extraction":
            return (sequence,)
        if self.task in ("text-generation", "fill-mask"):
            return (self.model.lm_head.forward_chunk(sequence),)
        if self.task == "text-classification":
            return (self.model.classifier(sequence),)
        if self.task == "question-answering":
            logits = self.model.qa_outputs(sequence)
            return (logits[..., 0], logits[..., 1])
        raise BucketrtError(f"unknown Reformer task '{self.task}'")


# -- the family -------------------------------------------------------------------------------


@register
class ReformerFamily(Family):
    name = "reformer"
    model_types = ("reformer",)
    order = 20
    config_class = "ReformerConfig"
    tasks = task_table(
        "Reformer",
        "feature-extraction",
        "text-generation",
        "fill-mask",
        "text-classification",
        "question-answering",
        classes={"text-generation": "ReformerModelWithLMHead"},
    )
    # A row's answer is bit-identical inside a same-shape batch and alone
    # (tests/test_triton_repository.py checks it).
    batch_rows_independent = True
    presets = {
        "reformer-crime-and-punishment": Preset(
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
        "reformer-tiny": Preset(
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
    }

    def check_config(self, config) -> None:
        check_config(config)

    def build_model(self, task: Task, config, ref: str | None, **kwargs):
        # HF asserts these in the heads' constructors; say it plainly instead.
        if task.name == "text-generation" and not config.is_decoder:
            raise BucketrtError(
                "text-generation (ReformerModelWithLMHead) needs is_decoder=True",
                "add --config-override is_decoder=true, or export fill-mask",
            )
        if task.name == "fill-mask" and config.is_decoder:
            raise BucketrtError(
                "fill-mask (ReformerForMaskedLM) needs is_decoder=False",
                "add --config-override is_decoder=false, or export text-generation",
            )
        if task.name == "text-generation" and config.is_decoder:
            for kind, after in (("lsh", config.lsh_num_chunks_after), ("local", config.local_num_chunks_after)):
                if kind in config.attn_layers and after:
                    raise BucketrtError(f"a causal Reformer needs {kind}_num_chunks_after=0, got {after}")
        if task.name == "question-answering" and config.num_labels != 2:
            raise BucketrtError(f"question-answering needs num_labels=2, got {config.num_labels}")
        return super().build_model(task, config, ref, **kwargs)

    def infer_task(self, config) -> str:
        task = super().infer_task(config)
        # A bare config of a decoder (crime-and-punishment's) is a language model.
        if task == self.default_task and not getattr(config, "architectures", None) and config.is_decoder:
            return "text-generation"
        return task

    def patch(self, model, task: Task, seed: int, options: dict) -> Patch:
        """Samples the rotations (HF's own with hash_seed); the component wraps the untouched HF
        modules in a ReformerGraph that holds them."""
        config = model.config
        check_config(config)
        rotations = sample_rotations(config, seed)
        lsh = "lsh" in config.attn_layers
        manifest = {
            "max_length": max_length(config),
            "chunk_lengths": {"lcm": chunk_lengths(config)[0], "min": chunk_lengths(config)[1]},
            "num_buckets": rotations.num_buckets if lsh else None,
            # num_buckets=None: HF picks it from the first padded length it sees; bucketrt from this.
            "num_buckets_resolved_from": rotations.resolved_from if lsh else None,
            "rotations": {
                "layers": [i for i, kind in enumerate(config.attn_layers) if kind == "lsh"],
                "shape_per_layer": list(rotations.tensors[0].shape) if rotations.tensors else None,
                "sampling": rotations.source,
            }
            if lsh
            else None,
        }
        return Patch(
            "lsh" if lsh else "local", self._components(model, task, rotations), manifest, tuple(rotations.tensors)
        )

    def _components(self, model, task: Task, rotations: Rotations) -> list[Component]:
        from torch.export import Dim

        config = model.config
        graph = ReformerGraph(model, task.name, rotations).eval()
        names = ("input_ids", "attention_mask")
        inputs = self.example_inputs(config, {name: [EXAMPLE_BATCH, EXAMPLE_SEQUENCE] for name in names})
        dims = {0: Dim(BATCH), 1: Dim(SEQUENCE, max=max_length(config))}
        return [Component("model", graph, names, task.outputs, inputs, {name: dims for name in names})]

    def max_length(self, config: dict) -> int | None:
        return max_length(types.SimpleNamespace(**config))
