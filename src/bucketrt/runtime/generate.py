"""`Seq2SeqGenerator`: the former name of greedy generation over a seq2seq export, now a thin alias
of `ORTModelForSeq2SeqLM` (bucketrt.runtime.modeling), whose `generate` runs the one loop
(bucketrt.runtime.decoding.greedy_seq2seq) with the KV cache."""

from __future__ import annotations

from .modeling import CPU, ORTModelForSeq2SeqLM


def Seq2SeqGenerator(export_dir, providers=None, intra_op_num_threads: int | None = None) -> ORTModelForSeq2SeqLM:  # noqa: N802
    """ORTModelForSeq2SeqLM.from_pretrained(export_dir) on the first of `providers` (default CPU);
    `.generate(input_ids, attention_mask, max_new_tokens=20)` as before."""
    provider = (providers or [CPU])[0]
    return ORTModelForSeq2SeqLM.from_pretrained(
        export_dir, provider=provider, intra_op_num_threads=intra_op_num_threads
    )
