"""Greedy generation by the export and by its PyTorch reference, token against token.

A quantized generation export can keep every output within its criteria and still pick other
tokens, which then feed every later step: `check()` also compares what both generate. Both go
through runtime.decoding's one greedy loop, the reference behind the session interface
(`ReferenceSession`), so that only the model differs.
"""

from __future__ import annotations

from .report import GenerationResult

_ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)"}


class ReferenceSession:
    """A component of the PyTorch reference behind the session interface runtime.decoding drives
    (run, get_inputs, get_outputs), so that the reference generates with the same greedy loop."""

    def __init__(self, reference, entry: dict):
        from types import SimpleNamespace

        self.reference, self.entry = reference, entry
        # As onnxruntime's NodeArg: the name, the shape (ints and dim names), the ONNX type.
        self._inputs = [
            SimpleNamespace(name=spec["name"], shape=spec.get("shape"), type=_ONNX_TYPES.get(spec.get("dtype"), ""))
            for spec in entry["inputs"]
        ]
        self._outputs = [SimpleNamespace(name=spec["name"], shape=spec.get("shape")) for spec in entry["outputs"]]

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def run(self, names, feeds):
        outputs = self.reference.run(feeds, self.entry["name"])
        return [outputs[name] for name in (names or [o.name for o in self._outputs])]


def compare_generation(
    manifest: dict,
    export_dir,
    reference,
    feeds: dict,
    steps: int,
    min_agreement: float,
    check_attributes: bool = True,
) -> GenerationResult | None:
    """Greedy tokens of the export in ONNX Runtime and of the reference, from the prompt `feeds`
    (the first component's inputs), through runtime.decoding's one loop; None for other tasks.
    `check_attributes=False`: the components' nodes were checked already (`check()` ran each one)."""
    import numpy as np

    from bucketrt.library import ort_session
    from bucketrt.runtime import decoding

    config = manifest.get("config", {})
    entries = {e["name"]: e for e in manifest["components"]}
    eos = config.get("eos_token_id")
    pad = config.get("pad_token_id")
    if manifest["task"] == "text2text-generation" and len(entries) == 3:
        start = config.get("decoder_start_token_id")
        start = config.get("pad_token_id", 0) if start is None else start
        names = [e["name"] for e in manifest["components"]]
        kwargs = dict(decoder_start_token_id=start, eos_token_id=eos, pad_token_id=pad or 0, max_new_tokens=steps)
        ids, mask = feeds["input_ids"], feeds.get("attention_mask")
        sessions = (ort_session(export_dir, component=n, check_attributes=check_attributes) for n in names)
        ours = decoding.greedy_seq2seq(*sessions, ids, mask, **kwargs)
        theirs = decoding.greedy_seq2seq(*(ReferenceSession(reference, entries[n]) for n in names), ids, mask, **kwargs)
        prompt = 1
    elif manifest["task"] == "text-generation" and len(entries) == 1:
        (entry,) = entries.values()
        kwargs = dict(eos_token_id=eos, pad_token_id=pad, max_new_tokens=steps)
        ids = feeds["input_ids"]
        ours = decoding.greedy_causal(ort_session(export_dir, check_attributes=check_attributes), ids, **kwargs)
        theirs = decoding.greedy_causal(ReferenceSession(reference, entry), ids, **kwargs)
        prompt = ids.shape[1]
    else:
        return None
    # Rows may stop at different steps (end of sequence): the shorter run's tokens are compared,
    # and a token the other run did not produce counts as disagreeing.
    width = max(ours.shape[1], theirs.shape[1])
    pad_to = lambda t: np.pad(t, ((0, 0), (0, width - t.shape[1])), constant_values=-1)  # noqa: E731
    ours, theirs = pad_to(ours)[:, prompt:], pad_to(theirs)[:, prompt:]
    return GenerationResult(steps, int(ours.size), int(np.count_nonzero(ours == theirs)), min_agreement)
