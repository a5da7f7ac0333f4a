"""Export folders used like transformers models: Optimum's ORTModel classes over bucketrt's sessions.

`ORTModelForSequenceClassification.from_pretrained("out/cls")` opens the folder's ONNX files with
`bucketrt.library.ort_session` and reads its config.json (and generation_config.json); calling the model
with the Hugging Face model's keyword arguments (numpy arrays or torch tensors) returns the
transformers ModelOutput of that head, in the same kind of arrays. Which class runs which task,
and which ModelOutput it returns, is bucketrt.export_format.tasks' HEADS table; `ORTModel.from_pretrained`
picks the class from the export's task.

The classes carry what transformers' pipelines read from a model (`config`, `generation_config`,
`can_generate()`, `device`, `dtype`, `main_input_name`, `forward`, `to`), so that
`transformers.pipeline(task, model=ort_model, tokenizer=tokenizer)` runs them as it runs PyTorch
models (docs/runtime.md). Generation is greedy, with the one loop of bucketrt.runtime.decoding.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from bucketrt.errors import BucketrtError
from bucketrt.export_format.manifest import (
    DECODER,
    DECODER_WITH_PAST,
    ENCODER,
    max_sequence_length,
    needs_op_library,
    read_manifest,
)
from bucketrt.export_format.tasks import GENERATION_TASKS, HEADS

from . import decoding

CPU = "CPUExecutionProvider"
# Keyword arguments of Hugging Face forwards that change nothing an export computes.
_IGNORED = {"return_dict", "use_cache", "output_attentions", "output_hidden_states"}
# Generation settings greedy decoding honours, or ignores as transformers does when not sampling.
_GREEDY_SETTINGS = {
    "max_new_tokens",
    "max_length",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "decoder_start_token_id",
    "use_cache",
    "do_sample",
    "num_beams",
    "num_return_sequences",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "transformers_version",
}
# Settings whose value here changes nothing in greedy decoding.
_NEUTRAL = {"repetition_penalty": 1.0, "length_penalty": 1.0, "num_beam_groups": 1, "diversity_penalty": 0.0}
_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}
_ORT_TYPES["tensor(float16)"] = np.float16

_CLASSES: dict[str, type[ORTModel]] = {}


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch")


def _to_numpy(value):
    if _is_torch(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class ORTModel:
    """An export folder's ONNX Runtime sessions, its manifest and its transformers config.

    Subclasses are Optimum's classes; `tasks` (the tasks whose exports each runs) comes from
    tasks.HEADS' runtime_class."""

    tasks: tuple[str, ...] = ()
    components: tuple[str, ...] = ("model",)
    main_input_name = "input_ids"
    base_model_prefix = "model"
    input_modalities = "text"
    output_modalities = "text"
    hf_device_map = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.tasks = tuple(task for task, head in HEADS.items() if head.runtime_class == cls.__name__)
        _CLASSES[cls.__name__] = cls

    def __init__(self, sessions: dict, manifest: dict, config, generation_config=None, model_dir=None, provider=CPU):
        self.sessions = sessions
        self.manifest = manifest
        self.config = config
        self.generation_config = generation_config
        self.model_dir = model_dir
        self.provider = provider
        self._output_class = None

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model_dir,
        provider: str = CPU,
        session_options=None,
        intra_op_num_threads: int | None = None,
    ):
        """The export folder `model_dir` (written by `bucketrt export`) with sessions on `provider`
        (ONNX Runtime's CPU fallback behind any other). `session_options`: a plain
        onnxruntime.SessionOptions, on which the op library is registered here (where the export
        holds bucketrt ops). Called on ORTModel, the class is the one of the export's task; called
        on a subclass, BucketrtError when the export is of a task the class does not run."""
        from bucketrt.library import ort_session

        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        task = manifest["task"]
        head = HEADS.get(task)
        target = _CLASSES.get(head.runtime_class) if head else None
        if target is None:
            raise BucketrtError(f"'{model_dir}' exports task '{task}', which no bucketrt.runtime class runs")
        if cls is not ORTModel and not issubclass(target, cls):
            raise BucketrtError(
                f"'{model_dir}' is a {task} export, which {cls.__name__} does not run",
                f"load it with {target.__name__} (or ORTModel.from_pretrained, which picks the class)",
            )
        files = {c["name"]: c["files"]["model"] for c in manifest["components"]}
        if set(files) != set(target.components):
            raise BucketrtError(
                f"'{model_dir}' has components {', '.join(files)}; {target.__name__} runs {', '.join(target.components)}",
                "export the model again with this bucketrt",
            )
        config, generation_config = _read_configs(model_dir, manifest)
        providers = [provider] + ([CPU] if provider != CPU else [])
        # An export without bucketrt ops (--ops standard) runs on plain sessions: bucketrt's op
        # library need not be there, nor can it be where the provider takes no custom ops.
        op_library = needs_op_library(manifest)
        sessions = {}
        for name in target.components:
            # One SessionOptions serves every session; the op library is registered on it once.
            sessions[name] = ort_session(
                model_dir / files[name],
                providers=providers,
                intra_op_num_threads=intra_op_num_threads,
                options=session_options,
                library_registered=bool(sessions) and session_options is not None,
                op_library=op_library,
            )
        return target(sessions, manifest, config, generation_config, model_dir, provider)

    # -- what transformers' pipelines read ---------------------------------------------------------
    @property
    def device(self):
        """torch's device of the outputs: always the CPU (ONNX Runtime's device is the provider)."""
        import torch

        return torch.device("cpu")

    @property
    def dtype(self):
        import torch

        return torch.float16 if self.manifest.get("dtype") == "fp16" else torch.float32

    def to(self, *args, **kwargs):
        """A no-op (kept for pipelines): where ONNX Runtime runs is the provider of from_pretrained."""
        return self

    def eval(self):
        return self

    def can_generate(self) -> bool:
        return False

    @property
    def task(self) -> str:
        return self.manifest["task"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_dir}, task={self.task}, provider={self.provider})"

    # -- running ---------------------------------------------------------------------------------
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        """The Hugging Face head's forward on ONNX Runtime: numpy or torch in, the same kind out."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        as_torch = any(_is_torch(v) for v in [*inputs.values(), *kwargs.values()])
        feeds = _feeds(self.sessions["model"], inputs, kwargs, type(self).__name__)
        if "input_ids" in feeds:
            self._check_length(feeds["input_ids"].shape[-1], "input_ids")
        return self._wrap(self._run("model", feeds), as_torch)

    def _check_length(self, length: int, what: str) -> None:
        """A sequence past the export's limit (the manifest's max_sequence_length, which `bucketrt
        triton` enforces too) is refused here with the limit named, rather than failing inside ONNX
        Runtime (a position table's Gather out of range) or running past the positions the model
        was built for."""
        limit = max_sequence_length(self.manifest)
        if limit is not None and length > limit:
            raise BucketrtError(
                f"{type(self).__name__}: {what} is {length} tokens long; this export takes at most {limit}",
                "shorten the input (the limit is max_sequence_length in the export's bucketrt.json)",
            )

    __call__ = forward

    def _run(self, component: str, feeds: dict) -> dict:
        session = self.sessions[component]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def _wrap(self, outputs: dict, as_torch: bool, names=None):
        import transformers.modeling_outputs as outputs_module

        head = HEADS[self.task]
        cls = getattr(outputs_module, head.output_class)
        values = {name: outputs[name] for name in (names or head.outputs) if name in outputs}
        if as_torch:
            import torch

            values = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in values.items()}
        return cls(**values)


def _read_configs(model_dir: Path, manifest: dict):
    """The folder's config.json (transformers' PretrainedConfig) and generation_config.json."""
    from transformers import AutoConfig, GenerationConfig

    if not (model_dir / "config.json").is_file():
        raise BucketrtError(
            f"'{model_dir}' has no config.json", "export it again with this bucketrt (exports now write one)"
        )
    try:
        # An export's config.json names no remote code (the exporter drops auto_map: the graphs
        # replace that code), so transformers' own config classes read every family's.
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    except BucketrtError:
        raise
    except Exception as e:
        raise BucketrtError(f"cannot read {model_dir / 'config.json'} ({' '.join(str(e).split())[:200]})") from None
    generation_config = None
    if manifest.get("task") in GENERATION_TASKS:
        if (model_dir / "generation_config.json").is_file():
            generation_config = GenerationConfig.from_pretrained(str(model_dir), local_files_only=True)
        else:
            generation_config = GenerationConfig.from_model_config(config)
    return config, generation_config


def _feeds(session, inputs: dict, extra: dict, who: str) -> dict:
    """The session's feeds from a Hugging Face forward's keyword arguments: missing masks are ones,
    missing token types zeros; token types the graph lacks (a model with one type) are dropped
    while they are all zero; anything else the graph does not take is a BucketrtError."""
    graph = {i.name: _ORT_TYPES.get(i.type, np.int64) for i in session.get_inputs()}
    given = {k: v for k, v in {**inputs, **extra}.items() if v is not None and k not in _IGNORED}
    unknown = sorted(set(given) - set(graph) - {"token_type_ids"})
    if unknown:
        raise BucketrtError(f"{who} takes {', '.join(graph)}; got {', '.join(unknown)} too")
    feeds = {name: _to_numpy(value) for name, value in given.items()}
    if "token_type_ids" in feeds and "token_type_ids" not in graph:
        if feeds.pop("token_type_ids").any():
            raise BucketrtError(f"{who}: this export has one token type; token_type_ids must be zeros")
    anchor = next((feeds[k] for k in ("input_ids", "decoder_input_ids") if k in feeds), None)
    if anchor is None:
        raise BucketrtError(f"{who} needs input_ids")
    for name, dtype in graph.items():
        if name not in feeds:
            if name.endswith("attention_mask") or name == "token_type_ids":
                fill = 1 if name.endswith("attention_mask") else 0
                feeds[name] = np.full(anchor.shape, fill, dtype=dtype)
            else:
                raise BucketrtError(f"{who} needs {name}")
        feeds[name] = np.ascontiguousarray(feeds[name], dtype=dtype)
    return feeds


class ORTModelForFeatureExtraction(ORTModel):
    pass


class ORTModelForMaskedLM(ORTModel):
    pass


class ORTModelForSequenceClassification(ORTModel):
    pass


class ORTModelForTokenClassification(ORTModel):
    pass


class ORTModelForQuestionAnswering(ORTModel):
    pass


class ORTModelForMultipleChoice(ORTModel):
    pass


class _Generation(ORTModel):
    """generate(): greedy decoding (bucketrt.runtime.decoding), with transformers' generate
    arguments resolved as transformers does over the folder's generation_config.json."""

    def can_generate(self) -> bool:
        return True

    def _settings(self, generation_config, kwargs: dict):
        from transformers import GenerationConfig

        settings = copy.deepcopy(generation_config or self.generation_config or GenerationConfig())
        unused = settings.update(**kwargs)
        if unused:
            raise BucketrtError(f"{type(self).__name__}.generate does not take {', '.join(sorted(unused))}")
        # Settings left off (False/None: e.g. output_attentions from the model's config) or neutral
        # change nothing; private fields (_from_model_config) are transformers' bookkeeping.
        changed = sorted(
            key
            for key, value in settings.to_diff_dict().items()
            if key not in _GREEDY_SETTINGS
            and not key.startswith("_")
            and value not in (None, False)
            and not (key in _NEUTRAL and value == _NEUTRAL[key])
        )
        if settings.do_sample or (settings.num_beams or 1) != 1 or (settings.num_return_sequences or 1) != 1:
            changed = ["do_sample/num_beams/num_return_sequences", *changed]
        if changed:
            raise BucketrtError(
                f"bucketrt decodes greedily only; not supported: {', '.join(changed)}",
                "pass do_sample=False (pipelines: pipe(text, do_sample=False)) and leave the others unset",
            )
        return settings

    @staticmethod
    def _new_tokens(settings, prompt_length: int) -> int:
        """max_new_tokens, else max_length less the prompt (transformers' default: 20 new tokens)."""
        if settings.max_new_tokens is not None:
            return settings.max_new_tokens
        if settings.max_length is not None:
            return max(0, settings.max_length - prompt_length)
        return 20


class ORTModelForCausalLM(_Generation):
    """A text-generation export. With a key/value cache (the mixture-of-experts causal LMs: one graph
    taking past_key_values.* and returning present.*), generate runs the prompt once and then one
    token a step, as transformers' `generate(do_sample=False)` does, left-padded batches included.
    Without one (Reformer) every step runs the whole sequence: transformers'
    `generate(do_sample=False, use_cache=False)` (docs/reformer.md)."""

    @property
    def cached(self) -> bool:
        return decoding.takes_cache(self.sessions["model"])

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        """CausalLMOutput (logits) of the whole sequence. A cached export runs it as its first
        decoding step (empty past, positions from the mask); the cache stays inside generate."""
        if not self.cached:
            return super().forward(input_ids, attention_mask, **kwargs)
        if input_ids is None:
            raise BucketrtError(f"{type(self).__name__} needs input_ids")
        if kwargs.get("past_key_values") is not None:
            raise BucketrtError(f"{type(self).__name__} takes no past_key_values; generate keeps the cache")
        unknown = sorted(k for k, v in kwargs.items() if v is not None and k not in _IGNORED | {"past_key_values"})
        if unknown:
            raise BucketrtError(
                f"{type(self).__name__} takes input_ids and attention_mask; got {', '.join(unknown)} too"
            )
        as_torch = _is_torch(input_ids) or _is_torch(attention_mask)
        mask = None if attention_mask is None else _to_numpy(attention_mask)
        ids = _to_numpy(input_ids)
        self._check_length(ids.shape[-1], "input_ids")
        feeds = decoding.first_step_feeds(self.sessions["model"], ids, mask)
        return self._wrap(self._run("model", feeds), as_torch)

    __call__ = forward

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        """Prompt `input_ids` [batch, N] followed by the greedy tokens, as a numpy array or a torch
        tensor like input_ids. A cached export reads `attention_mask` (0 at left padding); an
        uncached one (Reformer) does not, as transformers' Reformer does not in generate: its prompts
        are taken unpadded."""
        if input_ids is None:
            raise BucketrtError(f"{type(self).__name__}.generate needs input_ids")
        as_torch = _is_torch(input_ids)
        ids = _to_numpy(input_ids)
        mask = None if attention_mask is None or not self.cached else _to_numpy(attention_mask)
        settings = self._settings(generation_config, kwargs)
        steps = self._new_tokens(settings, ids.shape[-1])
        # The generated tokens run through the model too.
        self._check_length(ids.shape[-1] + steps, f"the prompt ({ids.shape[-1]}) with max_new_tokens ({steps})")
        out = decoding.greedy_causal(
            self.sessions["model"],
            ids,
            mask,
            eos_token_id=settings.eos_token_id,
            pad_token_id=settings.pad_token_id,
            max_new_tokens=steps,
        )
        return _like(out, as_torch)


class ORTModelForSeq2SeqLM(_Generation):
    """A text2text-generation export (SwitchTransformers): encoder + decoder + decoder with past."""

    components = (ENCODER, DECODER, DECODER_WITH_PAST)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        encoder_outputs=None,
        **kwargs,
    ):
        """Seq2SeqLMOutput (logits, encoder_last_hidden_state) of decoder_input_ids after the
        encoder (or the given encoder_outputs); no cache in or out (generate uses it)."""
        if decoder_input_ids is None:
            raise BucketrtError(f"{type(self).__name__} needs decoder_input_ids (or use generate)")
        as_torch = any(_is_torch(v) for v in (input_ids, attention_mask, decoder_input_ids))
        if kwargs.get("past_key_values") is not None:
            raise BucketrtError(f"{type(self).__name__} takes no past_key_values; generate keeps the cache")
        kwargs.pop("past_key_values", None)
        if encoder_outputs is None:
            feeds = _feeds(
                self.sessions[ENCODER], {"input_ids": input_ids, "attention_mask": attention_mask}, kwargs, ENCODER
            )
            self._check_length(feeds["input_ids"].shape[-1], "input_ids")
            hidden = self._run(ENCODER, feeds)["last_hidden_state"]
            mask = feeds["attention_mask"]
        else:
            hidden = _to_numpy(encoder_outputs[0])
            mask = np.ones(hidden.shape[:2], np.int64) if attention_mask is None else _to_numpy(attention_mask)
        decoder = {
            "input_ids": _to_numpy(decoder_input_ids),
            "encoder_attention_mask": mask,
            "encoder_hidden_states": hidden,
        }
        logits = self._run(DECODER, _feeds(self.sessions[DECODER], decoder, {}, DECODER))["logits"]
        return self._wrap(
            {"logits": logits, "encoder_last_hidden_state": hidden}, as_torch, ("logits", "encoder_last_hidden_state")
        )

    __call__ = forward

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        """[batch, 1 + generated] token ids starting with decoder_start_token_id, with the cache
        (transformers' `generate(do_sample=False)`), as a numpy array or torch tensor like input_ids."""
        if input_ids is None:
            raise BucketrtError(f"{type(self).__name__}.generate needs input_ids")
        as_torch = _is_torch(input_ids)
        settings = self._settings(generation_config, kwargs)
        start = settings.decoder_start_token_id
        if start is None:
            start = getattr(self.config, "decoder_start_token_id", None)
        if start is None:
            start = settings.bos_token_id
        if start is None:
            raise BucketrtError("the export's config has no decoder_start_token_id (nor bos_token_id)")
        eos = decoding._eos_set(settings.eos_token_id)
        pad = settings.pad_token_id if settings.pad_token_id is not None else (eos[0] if eos else 0)
        ids = _to_numpy(input_ids)
        self._check_length(ids.shape[-1], "input_ids")
        out = decoding.greedy_seq2seq(
            *(self.sessions[name] for name in self.components),
            ids,
            None if attention_mask is None else _to_numpy(attention_mask),
            decoder_start_token_id=int(start),
            eos_token_id=eos,
            pad_token_id=int(pad),
            max_new_tokens=self._new_tokens(settings, 1),
        )
        return _like(out, as_torch)


def _like(array: np.ndarray, as_torch: bool):
    if as_torch:
        import torch

        return torch.from_numpy(array)
    return array


# -- former entry points, kept for their callers ---------------------------------------------------


def greedy_generate(
    model,
    input_ids,
    max_new_tokens: int = 20,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> np.ndarray:
    """Greedy decoding without a cache over a decoder-only export (e.g. ReformerModelWithLMHead):
    prompt `input_ids` [B, N] (int64, no padding) plus up to `max_new_tokens` tokens. Every step runs
    the whole sequence and appends the argmax of the last position's logits, as Hugging Face's
    `generate(do_sample=False, use_cache=False)` does (decoding.greedy_causal).

    `model` is an onnxruntime.InferenceSession, an export folder or an .onnx path, with inputs
    input_ids and attention_mask and logits [B, N, vocab] as its first output. Like HF, a row that
    has produced `eos_token_id` continues with `pad_token_id`, and decoding stops once every row has.
    """
    from bucketrt.library import ort_session

    session = model if hasattr(model, "run") and hasattr(model, "get_inputs") else ort_session(model)
    return decoding.greedy_causal(
        session, input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id
    )


def Seq2SeqGenerator(export_dir, providers=None, intra_op_num_threads: int | None = None) -> ORTModelForSeq2SeqLM:  # noqa: N802
    """The former name of greedy generation over a seq2seq export:
    ORTModelForSeq2SeqLM.from_pretrained(export_dir) on the first of `providers` (default CPU), whose
    `.generate(input_ids, attention_mask, max_new_tokens=20)` runs with the KV cache."""
    provider = (providers or [CPU])[0]
    return ORTModelForSeq2SeqLM.from_pretrained(
        export_dir, provider=provider, intra_op_num_threads=intra_op_num_threads
    )
