"""int8 exports: `bucketrt quantize` as a library.

    from bucketrt.quantization import quantize
    manifest = quantize("out/yoso", "out/yoso-int8", per_channel=True, weight_type="int8")
    manifest["quantization"]          # settings, quantized and excluded nodes, source, versions

Every component is quantized by onnxruntime.quantization.quantize_dynamic over MatMul/Gemm with
constant weights (int8 or uint8 weights, activations quantized per run to uint8), but for the
linear layers of a decoder that takes a key/value cache, which `linear.quantize_linear_layers`
rewrites into bucketrt's LinearInt8 (int8 weights; a decoding step streams them faster); bucketrt's
own ops stay float, except the experts (ExpertFFN, TopKExperts), which `quantize_expert_ffn` rewrites
into their int8 ops (ExpertFFNInt8, TopKExpertsInt8) where available.
`bucketrt check` then compares the quantized export with the fp32 PyTorch reference by the
criteria recorded in its manifest (`CHECK_CRITERIA`).
"""

from __future__ import annotations

from .quantize import CHECK_CRITERIA, WEIGHT_TYPES, is_quantized, quantize, quantize_model_file

__all__ = ["CHECK_CRITERIA", "WEIGHT_TYPES", "is_quantized", "quantize", "quantize_model_file"]
