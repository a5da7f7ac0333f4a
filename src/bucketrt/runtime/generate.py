"""Greedy generation for seq2seq exports (encoder_model + decoder_model + decoder_with_past_model),
with the decoder's key/value cache: the encoder runs once, the first step runs decoder_model (which
also returns every layer's cross-attention keys/values), every later step feeds one token and the
cache to decoder_with_past_model.

It reproduces transformers' `generate(do_sample=False, num_beams=1)`: sequences start with
`decoder_start_token_id`, take the argmax of the last position's logits (the first maximum, like
torch.argmax), and once a sequence has produced `eos_token_id` it is padded with `pad_token_id`;
generation stops when every sequence has finished or after `max_new_tokens`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bucketrt.exporter.manifest import DECODER, DECODER_WITH_PAST, ENCODER, read_manifest

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
        self._past_inputs = [
            i.name for i in self.sessions[DECODER_WITH_PAST].get_inputs() if i.name.startswith("past_key_values.")
        ]

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 20) -> np.ndarray:
        """[batch, 1 + generated] int64 token ids, starting with decoder_start_token_id."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, sequence], got shape {list(input_ids.shape)}")
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
        if mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {list(mask.shape)} must have the shape of input_ids {list(input_ids.shape)}"
            )
        batch = input_ids.shape[0]
        (hidden,) = self.sessions[ENCODER].run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": mask})
        tokens = np.full((batch, 1), self.decoder_start_token_id, dtype=np.int64)
        finished = np.zeros(batch, dtype=bool)
        cross: dict[str, np.ndarray] = {}
        past: dict[str, np.ndarray] = {}
        for step in range(max_new_tokens):
            if step == 0:
                session = self.sessions[DECODER]
                feeds = {"input_ids": tokens, "encoder_attention_mask": mask, "encoder_hidden_states": hidden}
            else:
                session = self.sessions[DECODER_WITH_PAST]
                feeds = {"input_ids": tokens[:, -1:], "encoder_attention_mask": mask}
                feeds.update({name: past[name] if ".decoder." in name else cross[name] for name in self._past_inputs})
            names = [o.name for o in session.get_outputs()]
            outputs = dict(zip(names, session.run(names, feeds)))
            for name, value in outputs.items():
                if name.startswith("present."):
                    key = "past_key_values." + name[len("present.") :]
                    (past if ".decoder." in name else cross)[key] = value
            next_tokens = outputs["logits"][:, -1, :].argmax(-1).astype(np.int64)
            next_tokens = np.where(finished, self.pad_token_id, next_tokens)
            tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
            finished |= np.isin(next_tokens, list(self.eos_token_ids))
            if finished.all():
                break
        return tokens
