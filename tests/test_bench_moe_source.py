"""benchmarks/moe.py's GPT-OSS source carries its experts in MXFP4 beside the float weights, for
onnxruntime-genai's int8 builder: transformers' own MXFP4 decoder must read those tensors back as
exactly the float experts every other peer loads, and from_pretrained must still load the float
weights alone."""

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
mxfp4_integration = pytest.importorskip("transformers.integrations.mxfp4")

ROOT = Path(__file__).resolve().parent.parent


def _bench_moe():
    spec = importlib.util.spec_from_file_location("bench_moe", ROOT / "benchmarks" / "moe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mxfp4_codes_the_e2m1_grid_and_its_scales():
    moe = _bench_moe()
    # One block of 32: magnitudes 0..6 times 2^-3 (amax 0.75 -> exponent -3), signs alternating.
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    values = grid.repeat(4) * torch.tensor([1.0, -1.0]).repeat(16) * 2.0**-3
    blocks, scales, decoded = moe._mxfp4(values.reshape(1, 1, 32))
    assert blocks.shape == (1, 1, 1, 16) and blocks.dtype == torch.uint8
    assert scales.tolist() == [[[127 - 3]]]
    codes = torch.stack([blocks & 0x0F, blocks >> 4], dim=-1).reshape(32)
    assert codes[:8].tolist() == [0, 9, 2, 11, 4, 13, 6, 15]  # the even position in the low nibble
    assert torch.equal(decoded.reshape(32), values)
    # Off-grid values round to the nearest code; a block of zeros stays zeros.
    # (amax 4.9: exponent 0, so the grid itself.)
    _, _, rounded = moe._mxfp4(torch.tensor([[[0.3, 4.9, -2.4] + [0.0] * 29]]))
    assert rounded.reshape(32)[:3].tolist() == [0.5, 4.0, -2.0]
    _, zero_scales, zeros = moe._mxfp4(torch.zeros(1, 2, 64))
    assert not zeros.any() and (zero_scales == 0).all()


def test_gpt_oss_source_decodes_to_its_float_experts(tmp_path):
    moe = _bench_moe()
    config = transformers.AutoConfig.for_model(
        "gpt_oss",
        vocab_size=64,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    before = model.model.layers[0].mlp.experts.down_proj.detach().clone()
    packed = moe._experts_to_mxfp4(model)
    after = model.model.layers[0].mlp.experts.down_proj.detach()
    # Rounded, not replaced: within half of e2m1's widest step (between 4 and 6) at the block's
    # scale, which is under a third of the block's largest magnitude.
    assert 0 < float((after - before).abs().max()) < float(before.abs().max()) / 3.0
    model.save_pretrained(tmp_path)
    moe._save_beside(tmp_path, packed, moe.MXFP4_FILE)

    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["model.layers.1.mlp.experts.gate_up_proj_blocks"] == moe.MXFP4_FILE
    assert index["model.layers.1.mlp.experts.gate_up_proj"] == "model.safetensors"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    for i, layer in enumerate(loaded.model.layers):
        for name in ("gate_up_proj", "down_proj"):
            prefix = f"model.layers.{i}.mlp.experts.{name}"
            decoded = mxfp4_integration.convert_moe_packed_tensors(
                packed[prefix + "_blocks"], packed[prefix + "_scales"], dtype=torch.float32
            )
            weight = getattr(layer.mlp.experts, name).detach()
            assert decoded.shape == weight.shape
            assert torch.equal(decoded, weight), prefix
