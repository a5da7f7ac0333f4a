"""Which model types the moe family exports (docs/moe.md, "Survey of other model types"): for each
model type whose causal LM uses transformers' experts interface, a tiny random config, saved with
save_pretrained, exported (text-generation), checked in ONNX Runtime against the PyTorch reference,
and ORT's greedy generate against transformers' for a left-padded batch of two. One process per
model type (a crash stays that type's), one line per type.

    python benchmarks/moe_survey.py                 # every claimed model type
    python benchmarks/moe_survey.py mixtral,phimoe  # these
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

# Every config: 2 layers, hidden 32, 6 experts top-2; names other types use are harmless extras.
COMMON = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=48,
    moe_intermediate_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
    num_local_experts=6,
    num_experts=6,
    n_routed_experts=6,
    num_experts_per_tok=2,
    initializer_range=0.2,
    pad_token_id=0,
    eos_token_id=3,
    bos_token_id=2,
    n_group=2,
    topk_group=1,
    shared_expert_intermediate_size=24,
    tie_word_embeddings=False,
)
_MLA = dict(
    num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8
)
EXTRA = {
    "deepseek_v2": _MLA,
    "deepseek_v3": _MLA,
    "deepseek_v32": _MLA,
    "glm4_moe_lite": _MLA,
    "sarvam_mla": _MLA,
    "axk1": _MLA,
    "longcat_flash": _MLA,
    "dots1": dict(n_shared_experts=1),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"], num_dense_layers=0),
    "zaya": dict(num_experts_per_tok=1),
    "kolibri1_1": dict(head_dim=16),
    "dots3_note_text": dict(num_key_value_heads=4),
    "gemma4_text": dict(enable_moe_block=True),
}


def one(model_type: str, folder: Path) -> str:
    import numpy as np
    import torch
    import transformers

    import bucketrt
    from bucketrt.check import check
    from bucketrt.exporter import export

    config = transformers.AutoConfig.for_model(model_type, **dict(COMMON, **EXTRA.get(model_type, {})))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # no all-zero weight matrix: a zero router ties every expert
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0.0, 0.2)
    model.save_pretrained(folder / "src")
    manifest = export(str(folder / "src"), folder / "out")
    report = check(folder / "out", batch_size=2, sequence_length=16)
    ids = np.random.default_rng(1).integers(4, 120, size=(2, 6))
    mask = np.ones_like(ids)
    mask[1, :2] = 0
    ids[mask == 0] = 0
    ours = bucketrt.ORTModelForCausalLM.from_pretrained(folder / "out").generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=8
    )
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder / "src").eval()
    with torch.no_grad():
        theirs = hf.generate(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False, max_new_tokens=8
        ).numpy()
    same = ours.shape == theirs.shape and bool(np.array_equal(ours, theirs))
    experts = manifest["experts"]
    return (
        f"export {manifest['export_seconds']} s, {experts['layers']} TopKExperts ({experts['gating']}/"
        f"{experts['activation']}); check {'PASSED' if report.passed else 'FAILED'} (max abs "
        f"{report.max_abs_error:.2g}); ORT generate == transformers': {same}"
    )


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--one":
        with tempfile.TemporaryDirectory() as tmp:
            try:
                print("RESULT", json.dumps(one(args[1], Path(tmp))))
            except Exception as e:
                print("RESULT", json.dumps(f"FAIL {type(e).__name__}: {' '.join(str(e).split())[:240]}"))
        return 0
    if args:
        types = args[0].split(",")
    else:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        from bucketrt.exporter.families.moe import claims

        types = [t for t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if claims.experts_classes(t)]
    for model_type in types:
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--one", model_type], capture_output=True, text=True, timeout=600
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            result = json.loads(lines[-1][7:]) if lines else f"CRASHED (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            result = "timed out"
        print(f"{model_type}: {result}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
