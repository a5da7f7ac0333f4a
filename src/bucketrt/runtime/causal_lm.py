"""Greedy decoding with ONNX Runtime for an exported decoder-only LM (e.g. ReformerModelWithLMHead).

Every step runs the whole sequence (no cache) and appends the argmax of the last position's logits,
which is what Hugging Face's `generate(do_sample=False, use_cache=False)` does. For Reformer that is
also what the cached `generate(do_sample=False)` does as long as the sequence fits one LSH chunk
(see docs/reformer.md: HF's cached LSH decoding attends differently from its own full forward
beyond that).
"""

from __future__ import annotations

import numpy as np

from bucketrt.runtime import decoding


def _session(model):
    """`model` itself when it is a session, else bucketrt.ort_session over the path (CPU)."""
    if hasattr(model, "run") and hasattr(model, "get_inputs"):
        return model
    import bucketrt

    return bucketrt.ort_session(model)


def greedy_generate(
    model,
    input_ids,
    max_new_tokens: int = 20,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> np.ndarray:
    """Prompt `input_ids` [B, N] (int64, no padding) plus up to `max_new_tokens` greedy tokens.

    `model` is an onnxruntime.InferenceSession, an export folder or an .onnx path, with inputs
    input_ids and attention_mask and logits [B, N, vocab] as its first output. Like HF, a row that
    has produced `eos_token_id` continues with `pad_token_id`, and decoding stops once every row has.
    """
    return decoding.greedy_causal(
        _session(model), input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id
    )
