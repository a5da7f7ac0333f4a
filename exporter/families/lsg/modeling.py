"""Loading an LSG checkpoint on current transformers: stock BERT/RoBERTa modules, LSG's forward.

An LSG checkpoint's weights are a BERT (or RoBERTa) checkpoint's plus one table,
`<base>.embeddings.global_embeddings.weight`. So the stock transformers class for the task loads
the folder (`from_pretrained`, which also handles tied weights and formats), and its base model is
swapped for `LSGBaseModel`, which keeps the same submodules (same parameter names) and runs LSG's
forward: global tokens prepended to the embeddings, padding to a multiple of block_size, LSG
self-attention in every layer, the first text token's output replaced by the first global token's
(pool_with_global), and the sequence cut back to the input length.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

from bucketrt.errors import LSGConfigError

from .attention import LSGSelfAttention
from .config import GLOBAL_EMBEDDING_ROWS, LSGSettings, is_lsg, settings

# task -> transformers class, per family. These are the heads lsg-converter's parity cases cover.
TASK_CLASSES = {
    "bert": {
        "feature-extraction": "BertModel",
        "fill-mask": "BertForMaskedLM",
        "text-classification": "BertForSequenceClassification",
    },
    "roberta": {
        "feature-extraction": "RobertaModel",
        "fill-mask": "RobertaForMaskedLM",
        "text-classification": "RobertaForSequenceClassification",
    },
}
_ARCHITECTURE_TASKS = {
    "Model": "feature-extraction",
    "ForMaskedLM": "fill-mask",
    "ForSequenceClassification": "text-classification",
}


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise LSGConfigError(f"{folder}: no config.json")
    return json.loads(path.read_text())


def infer_task(config: dict) -> str:
    for arch in config.get("architectures") or ():
        for suffix, task in _ARCHITECTURE_TASKS.items():
            if arch.startswith("LSG") and arch.endswith(suffix) and arch[3 : -len(suffix)] in ("Bert", "Roberta"):
                return task
    return "feature-extraction"


def sample_lsh_projections(s: LSGSettings, num_layers: int, seed: int) -> list[list[torch.Tensor]]:
    """lsh projections of every layer and round, [heads, head_dim, buckets // 2] each.

    Drawn in the order the original draws them during one forward (layer by layer, pre-rounds then
    the last round, each as randn(1, h, 1, d, buckets // 2)) from a generator seeded with `seed`:
    the original run right after torch.manual_seed(seed) hashes with exactly these projections.
    """
    if s.sparsity_type != "lsh" or not s.has_sparse or s.sparsity_factor in (1, s.sparse_block_size):
        return [[] for _ in range(num_layers)]
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(num_layers):
        rounds = []
        for buckets in s.lsh_rounds:
            draw = torch.randn(1, s.num_heads, 1, s.head_dim, buckets // 2, generator=generator)
            rounds.append(draw[0, :, 0].contiguous())
        layers.append(rounds)
    return layers


class LSGBaseModel(nn.Module):
    """BERT/RoBERTa's base model with LSG's forward; submodules keep transformers' names."""

    def __init__(self, base: nn.Module, s: LSGSettings):
        super().__init__()
        self.settings = s
        self.config = base.config
        self.embeddings = base.embeddings
        self.embeddings.global_embeddings = nn.Embedding(GLOBAL_EMBEDDING_ROWS, base.config.hidden_size)
        self.encoder = base.encoder
        self.pooler = getattr(base, "pooler", None)
        for layer in self.encoder.layer:
            old = layer.attention.self
            layer.attention.self = LSGSelfAttention(s, old.query, old.key, old.value)

    def _embed(self, input_ids, token_type_ids):
        emb, s = self.embeddings, self.settings
        n, t = input_ids.shape
        if s.family == "roberta":
            # RoBERTa numbers positions from padding_idx + 1 and gives padding tokens padding_idx.
            live = input_ids.ne(emb.padding_idx).int()
            positions = (torch.cumsum(live, dim=1) * live).long() + emb.padding_idx
        else:
            positions = torch.arange(t, device=input_ids.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            emb.word_embeddings(input_ids)
            + emb.token_type_embeddings(token_type_ids)
            + emb.position_embeddings(positions)
        )
        globals_ = emb.global_embeddings.weight[: s.num_global_tokens].to(x.dtype)
        x = torch.cat((globals_[None].expand(n, -1, -1), x), dim=1)
        return emb.dropout(emb.LayerNorm(x))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **unsupported):
        if input_ids is None:
            raise ValueError("LSG models take input_ids")
        for name, value in unsupported.items():
            if value is not None and name not in (
                "return_dict",
                "output_attentions",
                "output_hidden_states",
                "use_cache",
            ):
                raise ValueError(f"LSG models do not take '{name}'")
        s = self.settings
        n, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self._embed(input_ids, token_type_ids)
        dtype = hidden.dtype
        minimum = torch.finfo(dtype).min
        key_mask = (1.0 - attention_mask.to(dtype)) * minimum
        if s.mask_first_token:
            key_mask = torch.cat((torch.full_like(key_mask[:, :1], minimum), key_mask[:, 1:]), dim=1)
        # Pad the text to whole blocks (the original's adaptive padding; it skips it for sequences
        # of at most two blocks, where padding with masked keys changes nothing).
        # ceil-division form: symbolic shapes prove the padded length a multiple of the block.
        pad = (t + s.block_size - 1) // s.block_size * s.block_size - t
        hidden = F.pad(hidden, (0, 0, 0, pad))
        key_mask = F.pad(key_mask, (0, pad), value=minimum)
        for layer in self.encoder.layer:
            context = layer.attention.self(hidden, key_mask)
            attended = layer.attention.output(context, hidden)
            hidden = layer.output(layer.intermediate(attended), attended)
        g = s.num_global_tokens
        if s.pool_with_global:
            hidden = torch.cat((hidden[:, :g], hidden[:, :1], hidden[:, g + 1 :]), dim=1)
        sequence = hidden[:, g : g + t]
        pooled = self.pooler(sequence) if self.pooler is not None else None
        return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=sequence, pooler_output=pooled)


def _load_tensor(folder: Path, names: tuple[str, ...]) -> torch.Tensor:
    """One tensor from the checkpoint, under the first of `names` it holds."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors import safe_open

        for file in files:
            with safe_open(str(file), "pt") as f:
                for name in names:
                    if name in f.keys():
                        return f.get_tensor(name)
    for file in sorted(folder.glob("pytorch_model*.bin")):
        state = torch.load(file, map_location="cpu", weights_only=True)
        for name in names:
            if name in state:
                return state[name]
    raise LSGConfigError(f"{folder}: the checkpoint has no global embeddings ({names[0]})")


def make_config(raw: dict):
    """(settings, transformers config) for an LSG config.json dict; raises LSGConfigError.

    The config is the stock BertConfig/RobertaConfig, which keeps LSG's fields (and `architectures`)
    as attributes, so `settings(config.to_dict())` reads them back after any override. `auto_map`
    is dropped: it names the remote code that this port replaces.
    """
    import transformers

    if not is_lsg(raw):
        raise LSGConfigError("not an LSG checkpoint (no LSG architectures/auto_map in config.json)")
    s = settings(raw)
    config_class = transformers.BertConfig if s.family == "bert" else transformers.RobertaConfig
    config = config_class.from_dict({k: v for k, v in raw.items() if k != "auto_map"})
    return s, config


def model_class(s: LSGSettings, task: str):
    """The stock transformers class that loads an LSG checkpoint for `task`."""
    import transformers

    classes = TASK_CLASSES[s.family]
    if task not in classes:
        raise LSGConfigError(f"task '{task}' is not supported for LSG models; choose one of: {', '.join(classes)}")
    return getattr(transformers, classes[task])


def global_embeddings(folder: str | Path, model: nn.Module) -> torch.Tensor:
    """The checkpoint's global embedding table (the one tensor stock transformers does not load)."""
    prefix = model.base_model_prefix
    return _load_tensor(
        Path(folder), (f"{prefix}.embeddings.global_embeddings.weight", "embeddings.global_embeddings.weight")
    )


def attach(model: nn.Module, s: LSGSettings, table: torch.Tensor | None = None) -> nn.Module:
    """Swaps the base model of a stock transformers model for LSGBaseModel, in place (eval mode).

    `table`: the global embeddings; None draws them like BERT's other embeddings (normal with
    initializer_range) from torch's current random state. lsh models still need
    `set_lsh_projections` before they run.
    """
    model.config._attn_implementation = "eager"
    prefix = model.base_model_prefix
    base = getattr(model, prefix, model)
    lsg_base = LSGBaseModel(base, s)
    weight = lsg_base.embeddings.global_embeddings.weight
    if table is None:
        table = torch.randn(weight.shape) * model.config.initializer_range
    if tuple(table.shape) != tuple(weight.shape):
        raise LSGConfigError(f"global embeddings have shape {list(table.shape)}, expected {list(weight.shape)}")
    with torch.no_grad():
        weight.copy_(table)
    lsg_base.to(next(base.parameters()).dtype)
    if base is model:
        return lsg_base.eval()
    setattr(model, prefix, lsg_base)
    return model.eval()


def set_lsh_projections(model: nn.Module, seed: int) -> list[torch.Tensor]:
    """Draws the lsh projections from `seed` (sample_lsh_projections) into every LSG attention of
    `model`; returns them in draw order (none unless the model hashes)."""
    layers = [m for m in model.modules() if isinstance(m, LSGSelfAttention)]
    if not layers:
        raise LSGConfigError("the model has no LSG attention (call attach first)")
    drawn = sample_lsh_projections(layers[0].settings, len(layers), seed)
    for layer, rounds in zip(layers, drawn):
        layer.set_lsh_projections(rounds)
    return [p for rounds in drawn for p in rounds]


def load(folder: str | Path, task: str | None = None, seed: int = 0, dtype: torch.dtype = torch.float32):
    """Loads an LSG checkpoint folder (save_pretrained layout) as a transformers model with LSG attention.

    `seed` draws the lsh projections (see sample_lsh_projections). Returns (model, settings, task).
    """
    import transformers

    folder = Path(folder)
    try:
        raw = read_config(folder)
        s, config = make_config(raw)
        task = task or infer_task(raw)
        cls = model_class(s, task)
    except LSGConfigError as e:
        raise LSGConfigError(f"{folder}: {e}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        try:
            model = cls.from_pretrained(folder, config=config, dtype=dtype)
        finally:
            transformers.logging.set_verbosity(verbosity)
    model = attach(model, s, global_embeddings(folder, model))
    set_lsh_projections(model, seed)
    return model, s, task


def from_config(raw: dict, task: str | None = None, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random-weight LSG model for a config.json dict; weights and lsh projections from `seed`."""
    s, config = make_config(raw)
    task = task or infer_task(raw)
    cls = model_class(s, task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = attach(cls(config), s)
    model = model.to(dtype).eval()
    set_lsh_projections(model, seed)
    return model, s, task
