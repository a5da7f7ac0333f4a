"""LSG models (LSG BERT, LSG RoBERTa) through bucketrt's own port (bucketrt.models.lsg).

`bucketrt export --model X` comes here when X is an LSG preset or a folder whose config.json is an
LSG checkpoint's (LSG architectures or auto_map; plain BERT/RoBERTa never match). The export
traces the port with dynamic batch and sequence: short sequences, lengths that are not a multiple
of block_size and padded batches all run through one graph. The lsh sparsity's hashing and merge
are bucketrt ops (ArgmaxHash, BucketSum); everything else is standard ONNX.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from bucketrt.models.lsg import modeling
from bucketrt.models.lsg.config import LSGConfigError, is_lsg

from . import manifest as mf
from .errors import BucketrtError

_LSG_BERT_AUTO_MAP = {
    "AutoConfig": "modeling_lsg_bert.LSGBertConfig",
    "AutoModel": "modeling_lsg_bert.LSGBertModel",
    "AutoModelForMaskedLM": "modeling_lsg_bert.LSGBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_lsg_bert.LSGBertForSequenceClassification",
}
# ccdv/lsg-bert-base-uncased-4096: BERT base with 4096 positions and lsg-converter's defaults.
PRESETS: dict[str, dict] = {
    "lsg-bert-4096": dict(
        model_type="bert", architectures=["LSGBertForMaskedLM"], auto_map=_LSG_BERT_AUTO_MAP,
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=4096, type_vocab_size=2, pad_token_id=0,
        block_size=128, sparse_block_size=128, sparsity_factor=2, sparsity_type="norm", num_global_tokens=1,
        mask_first_token=False, pool_with_global=True, adaptive=True, lsh_num_pre_rounds=1,
    ),
    "lsg-bert-tiny": dict(
        model_type="bert", architectures=["LSGBertForMaskedLM"], auto_map=_LSG_BERT_AUTO_MAP,
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
        block_size=16, sparse_block_size=16, sparsity_factor=2, sparsity_type="norm", num_global_tokens=1,
        mask_first_token=False, pool_with_global=True, adaptive=True, lsh_num_pre_rounds=1,
    ),
}
PRESET_DESCRIPTIONS = {
    "lsg-bert-4096": "ccdv/lsg-bert-base-uncased-4096 architecture (BERT base, 4096 positions, block 128, norm sparsity), random weights",
    "lsg-bert-tiny": "2 layers, hidden 64, block 16, norm sparsity, random weights",
}
OUTPUTS = {"feature-extraction": ("last_hidden_state",), "fill-mask": ("logits",), "text-classification": ("logits",)}


def detect(model: str) -> tuple[str, dict] | None:
    """("preset", config) or ("folder", config) when `model` is an LSG model, else None."""
    if model in PRESETS:
        return "preset", dict(PRESETS[model])
    config_path = Path(model) / "config.json"
    if config_path.is_file():
        try:
            raw = json.loads(config_path.read_text())
        except ValueError:
            return None
        if is_lsg(raw):
            return "folder", raw
    return None


def build(kind: str, model: str, raw: dict, task: str | None, seed: int, config_overrides: dict | None = None):
    """(model, settings, task) for a preset (weights from `seed`) or a checkpoint folder."""
    try:
        if kind == "preset":
            return modeling.from_config({**raw, **(config_overrides or {})}, task, seed)
        if config_overrides:
            raise LSGConfigError("--config-override applies to presets only for LSG checkpoints")
        return modeling.load(model, task, seed)
    except LSGConfigError as e:
        raise BucketrtError(str(e)) from None


class _Outputs(torch.nn.Module):
    def __init__(self, model, outputs):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        result = self.model(**kwargs, return_dict=True)
        return tuple(result[name] for name in self.outputs)


def input_names(raw: dict) -> tuple[str, ...]:
    names = ("input_ids", "attention_mask")
    return names + ("token_type_ids",) if raw.get("type_vocab_size", 2) > 1 else names


def export(model: str, detected, output_dir, task, seed, opset, overrides, progress) -> dict:
    from torch.export import Dim

    from .onnx_export import MAX_IR_VERSION, _check_onnx, _finalize
    from .progress import quiet_torch_export
    from .yoso import fingerprint

    kind, raw = detected
    started = time.perf_counter()
    output_dir = Path(output_dir)
    with progress.stage(f"Loading LSG model {model}"):
        hf_model, s, task = build(kind, model, raw, task, seed, overrides)
        weights_sha256 = fingerprint(sorted(hf_model.state_dict().items()))
    names = input_names(raw)
    outputs = OUTPUTS[task]
    module = _Outputs(hf_model, outputs).eval()
    # Tracing length: above two blocks and not a multiple of the block, so no path is special.
    length = min(raw.get("max_position_embeddings", 512), 3 * s.block_size + 3)
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(3, raw.get("vocab_size", 100), (2, length), generator=generator)}
    inputs["attention_mask"] = torch.ones(2, length, dtype=torch.int64)
    if "token_type_ids" in names:
        inputs["token_type_ids"] = torch.zeros(2, length, dtype=torch.int64)
    batch, sequence = Dim("batch_size"), Dim("sequence_length", max=raw.get("max_position_embeddings", 512))
    with progress.stage(f"Tracing with torch.onnx (opset {opset})"):
        try:
            with torch.no_grad(), quiet_torch_export():
                program = torch.onnx.export(
                    module, (), kwargs=inputs, dynamo=True,
                    dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                    input_names=list(names), output_names=list(outputs), opset_version=opset,
                    external_data=False, optimize=True, verbose=False,
                )
        except Exception as e:
            raise RuntimeError(f"torch.onnx.export failed for LSG model {model}: {e}") from e
        _finalize(program.model, MAX_IR_VERSION)
    with progress.stage(f"Saving {output_dir / mf.MODEL_NAME}"):
        import onnx
        import onnx_ir

        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / mf.MANIFEST_NAME).unlink(missing_ok=True)
        model_path = output_dir / mf.MODEL_NAME
        data_name = mf.MODEL_NAME + ".data"
        external = sum(p.numel() * p.element_size() for p in hf_model.parameters()) > 1_800_000_000
        onnx_ir.save(program.model, model_path, external_data=data_name if external else None)
        _check_onnx(model_path)
        proto = onnx.load(str(model_path), load_external_data=False)
        graph_inputs, graph_outputs = mf.graph_signature(proto)
    manifest = {
        "format": mf.FORMAT_VERSION,
        "family": "lsg",
        "model_type": f"lsg-{s.family}",
        "task": task,
        "model_class": type(hf_model).__name__,
        "source": str(model),
        "source_kind": kind,
        "revision": None,
        "seed": seed,
        "opset": opset,
        "ir_version": proto.ir_version,
        "config_overrides": overrides or {},
        "mode": f"lsg-{s.sparsity_type}",
        "mask_padding": True,
        "ops": mf.custom_ops(proto, "bucketrt"),
        "projections": None if s.sparsity_type != "lsh" else {
            "rounds": list(s.lsh_rounds),
            "sampling": "torch.Generator('cpu').manual_seed(seed); layer by layer, round by round: "
            "randn(1, heads, 1, head_dim, buckets // 2) (the original's draw order)",
        },
        "weights_sha256": weights_sha256,
        "inputs": graph_inputs,
        "outputs": graph_outputs,
        "files": {"model": mf.MODEL_NAME, "external_data": data_name if external else None},
        "config": raw | {"num_labels": hf_model.config.num_labels},
        "versions": mf.versions(),
        "export_seconds": round(time.perf_counter() - started, 2),
    }
    mf.write_manifest(output_dir, manifest)
    return manifest


def load_reference(output_dir, manifest: dict) -> torch.nn.Module:
    """The PyTorch port of an LSG export, with the exported weights and projections."""
    from .yoso import fingerprint

    kind, source = manifest["source_kind"], manifest["source"]
    raw = dict(PRESETS[source]) if kind == "preset" else modeling.read_config(source)
    model, _, _ = build(kind, source, raw, manifest["task"], manifest["seed"], manifest.get("config_overrides"))
    if fingerprint(sorted(model.state_dict().items())) != manifest.get("weights_sha256"):
        raise BucketrtError(f"the weights of {source} differ from those exported to '{output_dir}'", "export again")
    model.bucketrt_manifest = manifest
    return model
