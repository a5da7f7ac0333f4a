"""Greedy generation for seq2seq exports (encoder_model + decoder_model + decoder_with_past_model),
with the decoder's key/value cache: the encoder runs once, the first step runs decoder_model (which
also returns every layer's cross-attention keys/values), every later step feeds one token and the
cache to decoder_with_past_model.

The loop itself is `bucketrt.runtime.decoding.greedy_seq2seq` (numpy only, shared with the Triton
models `bucketrt triton` writes); it reproduces transformers' `generate(do_sample=False, num_beams=1)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bucketrt.exporter.manifest import DECODER, DECODER_WITH_PAST, ENCODER, read_manifest
from bucketrt.runtime import decoding

_PARTS = (ENCODER, DECODER, DECODER_WITH_PAST)


class Seq2SeqGenerator:
    def __init__(self, export_dir, providers=None, intra_op_num_threads: int | None = None):
        """Sessions over a seq2seq export folder; BucketrtError when it is not a bucketrt export
        (read_manifest), ValueError when it is one without the KV-cache components or logits."""
        import bucketrt

        export_dir = Path(export_dir)
        manifest = read_manifest(export_dir)
        files = {c["name"]: c["files"]["model"] for c in manifest["components"]}
        missing = [p for p in _PARTS if p not in files]
        if missing:
            raise ValueError(
                f"{export_dir} is not a seq2seq export with a KV cache (missing {', '.join(missing)}); "
                "export a text2text-generation task"
            )
        if manifest.get("task") != "text2text-generation":
            raise ValueError(
                f"{export_dir} exports task '{manifest.get('task')}', which has no logits to generate from"
            )
        config = manifest.get("config", {})
        self.decoder_start_token_id = config.get("decoder_start_token_id")
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = config.get("pad_token_id", 0)
        eos = config.get("eos_token_id")
        self.eos_token_ids = set(eos if isinstance(eos, list) else ([] if eos is None else [eos]))
        self.pad_token_id = config.get("pad_token_id", 0)
        self.sessions = {
            name: bucketrt.ort_session(
                export_dir / files[name], providers=providers, intra_op_num_threads=intra_op_num_threads
            )
            for name in _PARTS
        }

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 20) -> np.ndarray:
        """[batch, 1 + generated] int64 token ids, starting with decoder_start_token_id."""
        return decoding.greedy_seq2seq(
            *(self.sessions[name] for name in _PARTS),
            input_ids,
            attention_mask,
            decoder_start_token_id=self.decoder_start_token_id,
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            max_new_tokens=max_new_tokens,
        )
