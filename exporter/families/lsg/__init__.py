"""LSG models (LSG BERT, LSG RoBERTa) through bucketrt's own port (the modules beside this one).

An LSG checkpoint's config.json says model_type "bert" or "roberta" and names LSG classes in
`architectures`/`auto_map` (remote code that does not run on transformers 5); this family claims
exactly those, so plain BERT/RoBERTa stay unsupported. The stock transformers class loads the
weights and the port's LSGBaseModel takes over the forward (see modeling.py here).

The export traces the port with dynamic batch and sequence: short sequences (full attention),
lengths that are not a multiple of block_size and padded batches all run through one graph. The
lsh sparsity's hashing and merge are bucketrt ops (ArgmaxHash, BucketSum), with projections drawn
once from the export seed in `patch`; everything else is standard ONNX.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bucketrt.errors import BucketrtError, LSGConfigError
from bucketrt.export_format.tasks import HEADS, Task, task_table

from ...family import Component, Family, Patch, register
from ...presets import Preset
from . import modeling
from .config import LSGSettings, is_lsg, settings


def _settings(config) -> LSGSettings:
    """The LSG settings of a config (or of its to_dict())."""
    try:
        return settings(config if isinstance(config, dict) else config.to_dict())
    except LSGConfigError as e:
        raise BucketrtError(str(e)) from None


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


@register
class LsgFamily(Family):
    name = "lsg"
    # For the "not supported" message only: LSG checkpoints say model_type bert/roberta, and
    # `matches` looks for LSG's classes instead.
    model_types = ("lsg-bert", "lsg-roberta")
    order = 40
    # The BERT names; an LSG RoBERTa export records its LSGRoberta class (see `patch`).
    tasks = task_table("LSGBert", "feature-extraction", "fill-mask", "text-classification")
    # Serving runs each request alone: whether rows stay bit-identical batched is not checked yet.
    batch_rows_independent = False
    # config.json content of an LSG BERT checkpoint (model_type bert, LSG classes).
    presets = {
        "lsg-bert-4096": Preset(
            "ccdv/lsg-bert-base-uncased-4096 architecture (BERT base, 4096 positions, block 128, norm "
            "sparsity, 1 global token), random weights",
            dict(_LSG_BERT, max_position_embeddings=4096),
        ),
        "lsg-bert-tiny": Preset(
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
    }

    # -- configs and models ------------------------------------------------------------------
    def matches(self, config: dict) -> bool:
        return is_lsg(config)

    def make_config(self, values: dict):
        try:
            return modeling.make_config(values)[1]
        except LSGConfigError as e:
            raise BucketrtError(str(e)) from None

    def load_config(self, ref: str, **kwargs):
        """config.json of a folder or hub id, read as JSON: transformers' AutoConfig would want the
        checkpoint's remote code (auto_map)."""
        from transformers.utils import cached_file

        path = cached_file(ref, "config.json", **kwargs)
        return self.make_config(json.loads(Path(path).read_text()))

    def check_config(self, config) -> None:
        _settings(config)

    def infer_task(self, config) -> str:
        return modeling.infer_task(config.to_dict())

    def build_model(self, task: Task, config, ref: str | None, **kwargs):
        """The stock transformers model with LSG's base model; lsh projections come in `patch`."""
        s = _settings(config)
        cls = modeling.model_class(s, task.name)
        if ref is None:
            return modeling.attach(cls(config), s)  # weights and global table from torch's seed
        model = cls.from_pretrained(ref, config=config, **kwargs)
        folder = Path(ref)
        if not folder.is_dir():  # a hub id: the files from_pretrained just cached
            from huggingface_hub import snapshot_download

            hub = {k: kwargs[k] for k in ("revision", "local_files_only") if kwargs.get(k) is not None}
            folder = Path(snapshot_download(ref, allow_patterns=["*.safetensors", "*.bin", "*.json"], **hub))
        try:
            return modeling.attach(model, s, modeling.global_embeddings(folder, model))
        except LSGConfigError as e:
            raise BucketrtError(str(e)) from None

    def max_length(self, config: dict) -> int | None:
        # RoBERTa numbers text positions from padding_idx + 1. Global tokens take no position.
        limit = config["max_position_embeddings"]
        return limit - config["pad_token_id"] - 1 if _settings(config).family == "roberta" else limit

    # -- export --------------------------------------------------------------------------------
    def patch(self, model, task: Task, seed: int, options: dict) -> Patch:
        s = _settings(model.config)
        projections = modeling.set_lsh_projections(model, seed)
        model.eval()
        lsh = None
        if projections:
            lsh = {
                "rounds": list(s.lsh_rounds),
                "layers": model.config.num_hidden_layers,
                "sampling": "torch.Generator('cpu').manual_seed(seed); layer by layer, round by round: "
                "randn(1, heads, 1, head_dim, buckets // 2) (lsg-converter's draw order)",
            }
        family = "Roberta" if s.family == "roberta" else "Bert"
        manifest = {
            # The LSG class the checkpoint names (the task table has the BERT names); this key
            # replaces the task's model_class in the manifest.
            "model_class": f"LSG{family}{HEADS[task.name].suffix}",
            "lsg": dataclasses.asdict(s),
            "projections": lsh,
        }
        return Patch(s.sparsity_type, self.components(model, task), manifest, tuple(projections))

    def components(self, model, task: Task) -> list[Component]:
        """The default component, traced at a length above two blocks and not a multiple of the
        block, so that no path of the block formulation is a special case of the example."""
        [component] = super().components(model, task)
        s = _settings(model.config)
        length = min(self.max_length(model.config.to_dict()), 3 * s.block_size + 3)
        shapes = {name: [*example.shape[:-1], length] for name, example in component.example_inputs.items()}
        component.example_inputs = self.example_inputs(model.config, shapes)
        return [component]
