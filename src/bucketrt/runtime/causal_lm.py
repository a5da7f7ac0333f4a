"""Greedy decoding with ONNX Runtime for an exported decoder-only LM (e.g. ReformerModelWithLMHead).

Every step runs the whole sequence (no cache) and appends the argmax of the last position's logits,
which is what Hugging Face's `generate(do_sample=False, use_cache=False)` does. For Reformer that is
also what the cached `generate(do_sample=False)` does as long as the sequence fits one LSH chunk
(see docs/reformer.md: HF's cached LSH decoding attends differently from its own full forward
beyond that).
"""

from __future__ import annotations

import numpy as np


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
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    session = _session(model)
    ids = np.asarray(input_ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] < 1:
        raise ValueError(f"input_ids must be [batch, length>=1], got shape {list(ids.shape)}")
    names = {i.name for i in session.get_inputs()}
    finished = np.zeros(ids.shape[0], dtype=bool)
    for _ in range(max_new_tokens):
        feeds = {"input_ids": ids}
        if "attention_mask" in names:
            feeds["attention_mask"] = np.ones_like(ids)
        logits = session.run(None, feeds)[0]
        token = logits[:, -1].argmax(-1).astype(np.int64)  # first maximum, as torch.argmax
        if eos_token_id is not None:
            token = np.where(finished, pad_token_id if pad_token_id is not None else eos_token_id, token)
            finished |= token == eos_token_id
        ids = np.concatenate([ids, token[:, None]], axis=1)
        if eos_token_id is not None and finished.all():
            break
    return ids
