"""Greedy decoding loops over ONNX Runtime sessions: the one definition of bucketrt's generation.

This module imports numpy, and onnxruntime only when handed one of its sessions, on purpose:
`bucketrt triton` copies it next to a Triton Python-backend model, whose server has numpy and
onnxruntime but not bucketrt, torch or transformers. The sessions are passed in (anything with
`run(names, feeds)`, `get_inputs()` and `get_outputs()`, as onnxruntime.InferenceSession has), so
the loops do not know where they run.

The loops reproduce transformers' `generate(do_sample=False, num_beams=1)`: the next token is the
argmax of the last position's logits (the first maximum, like torch.argmax); a row that has produced
an end-of-sequence token continues with `pad_token_id`; decoding stops when every row has finished
or after `max_new_tokens`. The `iter_*` forms yield each step's tokens [batch] as they are chosen
(streaming); the `greedy_*` forms return the whole sequences.

The key/value cache never comes back to Python between steps: where the session runs on ONNX
Runtime's own values (`run_with_ort_values`), every output stays an OrtValue and each step's
present.* values are fed as the next step's past_key_values.* as they are, so that only the
logits are read out (as numpy). Other sessions (the PyTorch reference of
`bucketrt check`) run with numpy feeds. The attention mask is one buffer of the longest sequence,
filled once, of which each step feeds the first columns.

An export whose past and present share one buffer (each present.* has its past's shape: the MoE
family's `shared_kv_buffer` option, onnxruntime-genai's convention) starts from zeroed buffers of
the generation's whole length, prompt and new tokens; on ONNX Runtime every step after the prompt's
binds each past_key_values.* input and its present.* output to the same OrtValue (IO binding), so
that the graph writes the step's keys and values into the buffer in place and nothing else of the
cache is touched. (The prompt's step is not bound: IO binding does not take an input with a
default, and the prompt's step feeds one, `logits_to_keep`; its graph copies the zeroed buffers
once.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."
# The optional input of bucketrt's causal-LM exports (exporter/logits_to_keep.py): the logits of the
# last N positions only (0, its default: every position). The prompt's step feeds 1, as
# transformers' generate does, sparing the LM head over the rest of the prompt.
LOGITS_TO_KEEP = "logits_to_keep"


def _eos_set(eos_token_id) -> list[int]:
    if eos_token_id is None:
        return []
    return [int(t) for t in (eos_token_id if isinstance(eos_token_id, Iterable) else [eos_token_id])]


def _check_ids(input_ids, attention_mask=None) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(input_ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] < 1:
        raise ValueError(f"input_ids must be [batch, length>=1], got shape {list(ids.shape)}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask {list(mask.shape)} must have the shape of input_ids {list(ids.shape)}")
    return ids, mask


def _check_steps(max_new_tokens) -> int:
    if int(max_new_tokens) < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    return int(max_new_tokens)


def _choose(logits: np.ndarray, finished: np.ndarray, eos: list[int], pad_token_id: int) -> np.ndarray:
    """The next token per row from logits [batch, length, vocab]; updates `finished` in place."""
    token = logits[:, -1, :].argmax(-1).astype(np.int64)
    token = np.where(finished, np.int64(pad_token_id), token)
    if eos:
        finished |= np.isin(token, eos)
    return token


def _stepper(session):
    """A function running one step, feeds {name: numpy array or a value it returned} -> {output
    name: value}, whose values stay ONNX Runtime's (OrtValue) where the session runs on them
    (`run_with_ort_values`): a cache output fed back as an input is then neither copied out nor in,
    and a numpy feed is wrapped without a copy. (Unlike IO binding, this also takes inputs with a
    default, such as `logits_to_keep`.)"""
    names = [o.name for o in session.get_outputs()]
    if not hasattr(session, "run_with_ort_values"):
        return lambda feeds: dict(zip(names, session.run(names, feeds)))
    from onnxruntime import OrtValue  # a session that has run_with_ort_values is onnxruntime's

    def step(feeds):
        values = {
            # (np.require keeps a scalar 0-d, where np.ascontiguousarray would make it 1-d.)
            name: OrtValue.ortvalue_from_numpy(np.require(value, requirements="C"))
            if isinstance(value, np.ndarray)
            else value
            for name, value in feeds.items()
        }
        return dict(zip(names, session.run_with_ort_values(names, values)))

    return step


def _in_place_stepper(session, buffers: dict):
    """A step function for an ONNX Runtime session whose past and present share one buffer:
    `buffers` {present.* name: OrtValue} stay bound as both the past input and the present output
    (IO binding), so each run writes its keys and values into them in place; the step returns them
    and the logits, and the feeds' past_key_values.* (those same buffers) need no binding again."""
    binding = session.io_binding()
    binding.bind_output("logits")
    for name, value in buffers.items():
        binding.bind_ortvalue_input(PAST_PREFIX + name[len(PRESENT_PREFIX) :], value)
        binding.bind_ortvalue_output(name, value)

    def step(feeds):
        for name, value in feeds.items():
            if not name.startswith(PAST_PREFIX):
                binding.bind_cpu_input(name, np.require(value, requirements="C"))
        session.run_with_iobinding(binding)
        return {"logits": binding.get_outputs()[0], **buffers}

    return step


def _host(value) -> np.ndarray:
    """A step's output as numpy (an OrtValue's data is copied out; a numpy array is itself)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


def iter_seq2seq(
    encoder,
    decoder,
    decoder_with_past,
    input_ids,
    attention_mask=None,
    *,
    decoder_start_token_id: int,
    eos_token_id=None,
    pad_token_id: int = 0,
    max_new_tokens: int = 20,
) -> Iterator[np.ndarray]:
    """Each step's tokens [batch] for an encoder + decoder + decoder-with-past export.

    The encoder runs once; the first step runs `decoder` (which also returns every layer's
    cross-attention keys/values as present.*.encoder.*); every later step feeds one token and the
    cache (past_key_values.*) to `decoder_with_past`.
    """
    ids, mask = _check_ids(input_ids, attention_mask)
    steps = _check_steps(max_new_tokens)
    eos = _eos_set(eos_token_id)
    (hidden,) = encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
    past_names = [i.name for i in decoder_with_past.get_inputs() if i.name.startswith(PAST_PREFIX)]
    batch = ids.shape[0]
    last = np.full((batch, 1), decoder_start_token_id, dtype=np.int64)
    finished = np.zeros(batch, dtype=bool)
    cache: dict = {}  # past_key_values.* -> the value a step returned (kept in ONNX Runtime's)
    run_first, run_next = _stepper(decoder), _stepper(decoder_with_past)
    for step in range(steps):
        if step == 0:
            outputs = run_first({"input_ids": last, "encoder_attention_mask": mask, "encoder_hidden_states": hidden})
        else:
            feeds = {"input_ids": last, "encoder_attention_mask": mask}
            feeds.update({name: cache[name] for name in past_names})
            outputs = run_next(feeds)
        for name, value in outputs.items():
            # decoder_with_past returns only the self-attention cache; the cross-attention entries
            # from the first step stay as they are.
            if name.startswith(PRESENT_PREFIX):
                cache[PAST_PREFIX + name[len(PRESENT_PREFIX) :]] = value
        token = _choose(_host(outputs["logits"]), finished, eos, pad_token_id)
        yield token
        last = token[:, None]
        if finished.all():
            return


def greedy_seq2seq(encoder, decoder, decoder_with_past, input_ids, attention_mask=None, **kwargs) -> np.ndarray:
    """[batch, 1 + generated] int64 token ids, starting with decoder_start_token_id (as transformers)."""
    ids, _ = _check_ids(input_ids, attention_mask)
    start = np.full((ids.shape[0], 1), kwargs["decoder_start_token_id"], dtype=np.int64)
    steps = list(iter_seq2seq(encoder, decoder, decoder_with_past, input_ids, attention_mask, **kwargs))
    return np.concatenate([start] + [t[:, None] for t in steps], axis=1)


def takes_cache(session) -> bool:
    """Whether a decoder-only export takes a key/value cache (past_key_values.* inputs)."""
    return any(i.name.startswith(PAST_PREFIX) for i in session.get_inputs())


def shares_buffer(session) -> bool:
    """Whether a cached export's past and present share one buffer: each present.* output has the
    shape of its past_key_values.* input (dim names included), where a growing cache's present is
    longer than its past."""
    shapes = {
        o.name[len(PRESENT_PREFIX) :]: getattr(o, "shape", None)
        for o in session.get_outputs()
        if o.name.startswith(PRESENT_PREFIX)
    }
    pasts = {
        i.name[len(PAST_PREFIX) :]: getattr(i, "shape", None)
        for i in session.get_inputs()
        if i.name.startswith(PAST_PREFIX)
    }
    return bool(pasts) and all(shape and shapes.get(name) == shape for name, shape in pasts.items())


def _empty_past(session, batch: int, buffer_length: int) -> dict[str, np.ndarray]:
    """An empty cache for each past_key_values.* input [batch, heads, past, dim]: past length 0, or
    a zeroed buffer of `buffer_length` tokens where past and present share one (`shares_buffer`);
    its heads and dim read from the graph's input shape, its dtype from the input's type."""
    length = buffer_length if shares_buffer(session) else 0
    past = {}
    for spec in session.get_inputs():
        if not spec.name.startswith(PAST_PREFIX):
            continue
        shape = list(getattr(spec, "shape", None) or [])
        if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int):
            raise ValueError(f"input {spec.name} has shape {shape}; a cache input is [batch, heads, past, dim]")
        dtype = np.float16 if getattr(spec, "type", "") == "tensor(float16)" else np.float32
        past[spec.name] = np.zeros((batch, shape[1], length, shape[3]), dtype=dtype)
    return past


def first_step_feeds(session, input_ids, attention_mask=None, new_tokens: int = 0) -> dict[str, np.ndarray]:
    """The feeds of a cached decoder-only export's first step (the prefill): the prompt, its mask,
    its positions (the mask's cumulative sum less one, 0 at padding: transformers' generate for
    left-padded prompts) and an empty past (a shared buffer: room for the prompt and `new_tokens`
    more)."""
    ids, mask = _check_ids(input_ids, attention_mask)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": _positions(mask)}
    feeds.update(_empty_past(session, ids.shape[0], ids.shape[1] + new_tokens))
    takes = {i.name for i in session.get_inputs()}
    return {name: value for name, value in feeds.items() if name in takes}


def _keeps_logits(session) -> bool:
    """Whether the session takes the optional `logits_to_keep` (ONNX Runtime lists an input with a
    default among its overridable initializers)."""
    optional = getattr(session, "get_overridable_initializers", None)
    return optional is not None and any(i.name == LOGITS_TO_KEEP for i in optional())


def _positions(mask: np.ndarray) -> np.ndarray:
    return np.where(mask == 0, 0, np.cumsum(mask, axis=-1) - 1).astype(np.int64)


def iter_causal(
    session,
    input_ids,
    attention_mask=None,
    *,
    eos_token_id=None,
    pad_token_id: int | None = None,
    max_new_tokens: int = 20,
) -> Iterator[np.ndarray]:
    """Each step's tokens [batch] for a decoder-only LM export.

    With a key/value cache (past_key_values.* inputs, present.* outputs: the mixture-of-experts
    causal LMs), the first step runs the prompt with an empty past, and every later step one token
    per row with the cache: transformers' `generate(do_sample=False)`, left-padded batches included
    (`attention_mask` 0 at the padding; positions count the real tokens only).

    Without a cache (Reformer) every step runs the whole sequence, which is what transformers'
    `generate(do_sample=False, use_cache=False)` does; `input_ids` must not be padded and
    `attention_mask` is not read."""
    if takes_cache(session):
        yield from _iter_cached(session, input_ids, attention_mask, eos_token_id, pad_token_id, max_new_tokens)
        return
    ids, _ = _check_ids(input_ids)
    steps = _check_steps(max_new_tokens)
    eos = _eos_set(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    takes_mask = "attention_mask" in {i.name for i in session.get_inputs()}
    finished = np.zeros(ids.shape[0], dtype=bool)
    for _ in range(steps):
        feeds = {"input_ids": ids}
        if takes_mask:
            feeds["attention_mask"] = np.ones_like(ids)
        logits = session.run(None, feeds)[0]
        token = _choose(logits, finished, eos, pad)
        yield token
        ids = np.concatenate([ids, token[:, None]], axis=1)
        if finished.all():
            return


def _iter_cached(session, input_ids, attention_mask, eos_token_id, pad_token_id, max_new_tokens):
    steps = _check_steps(max_new_tokens)
    eos = _eos_set(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    _, mask = _check_ids(input_ids, attention_mask)
    # The last step feeds the prompt and steps - 1 tokens (the last token is not run).
    feeds = first_step_feeds(session, input_ids, mask, max(steps - 1, 0))
    if _keeps_logits(session):
        feeds[LOGITS_TO_KEEP] = np.array(1, dtype=np.int64)
    takes = {i.name for i in session.get_inputs()}
    positions = _positions(mask)
    batch, length = mask.shape
    # The mask of every step: the prompt's, then ones; step s feeds its first length + s columns (a
    # view for one row; a row-major copy of the columns for more).
    masks = np.ones((batch, length + max(steps - 1, 0)), dtype=np.int64)
    masks[:, :length] = mask
    run = _stepper(session)
    in_place = shares_buffer(session) and hasattr(session, "io_binding")
    finished = np.zeros(batch, dtype=bool)
    for step in range(steps):
        outputs = run(feeds)
        if step == 0 and in_place:
            run = _in_place_stepper(session, {n: v for n, v in outputs.items() if n.startswith(PRESENT_PREFIX)})
        token = _choose(_host(outputs["logits"]), finished, eos, pad)
        yield token
        if finished.all():
            return
        length += 1
        positions = positions[:, -1:] + 1
        mask = np.ascontiguousarray(masks[:, :length])
        feeds = {"input_ids": token[:, None], "attention_mask": mask, "position_ids": positions}
        for name, value in outputs.items():
            if name.startswith(PRESENT_PREFIX):
                feeds[PAST_PREFIX + name[len(PRESENT_PREFIX) :]] = value
        feeds = {name: value for name, value in feeds.items() if name in takes}


def greedy_causal(session, input_ids, attention_mask=None, **kwargs) -> np.ndarray:
    """The prompt [batch, N] followed by up to max_new_tokens greedy tokens."""
    ids, _ = _check_ids(input_ids)
    tokens = [t[:, None] for t in iter_causal(session, ids, attention_mask, **kwargs)]
    return np.concatenate([ids, *tokens], axis=1)
