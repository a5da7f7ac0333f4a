"""`bucketrt.pipeline`: transformers' `pipeline` for bucketrt exports (and for PyTorch models).

The ORTModel classes fit transformers' own pipelines (feature-extraction, fill-mask,
text-classification, token-classification, text-generation), so for those tasks this is
`transformers.pipeline` itself. transformers 5 removed the question-answering and
text2text-generation pipelines; bucketrt keeps them here, as transformers.Pipeline subclasses that
run any model with the Hugging Face interface (an ORTModel or the PyTorch model alike). Why this
and not only "pass the model to transformers.pipeline": docs/runtime.md.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from bucketrt.errors import BucketrtError

# The pipeline task of each export task (multiple-choice has no pipeline in transformers).
_PIPELINE_TASK = {
    "feature-extraction": "feature-extraction",
    "feature-extraction-encoder": "feature-extraction",
    "fill-mask": "fill-mask",
    "text-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "text-generation": "text-generation",
    "text2text-generation": "text2text-generation",
}


def _pipeline_classes():
    """bucketrt's question-answering and text2text-generation pipelines (built on first use:
    transformers is imported only then)."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _define_pipelines()
    return _CLASSES


_CLASSES = None


@contextlib.contextmanager
def _quiet_model_type_check():
    """transformers' pipelines log an error for a model class outside their PyTorch mappings
    (check_model_type) and then run it all the same; for an ORTModel that line is noise."""
    logger = logging.getLogger("transformers.pipelines.base")

    def drop(record):
        return "is not supported for" not in record.getMessage()

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def pipeline(task: str | None = None, model=None, tokenizer=None, **kwargs):
    """transformers.pipeline's signature, for bucketrt exports.

    `model`: an ORTModel, an export folder (opened with ORTModel.from_pretrained; `model_kwargs`
    go to it, e.g. {"provider": "CUDAExecutionProvider"}) or a PyTorch model. `tokenizer`: default,
    the folder's (bucketrt export copies the source's). `task`: default, the export's.
    question-answering and text2text-generation are bucketrt's pipelines; the other tasks go to
    transformers.pipeline.
    """
    from .modeling import ORTModel

    if isinstance(model, (str, Path)):
        folder = Path(model)
        model = ORTModel.from_pretrained(folder, **(kwargs.pop("model_kwargs", None) or {}))
        if tokenizer is None:
            tokenizer = _folder_tokenizer(folder)
    if model is None:
        raise BucketrtError("bucketrt.pipeline needs a model: an export folder or a model object")
    if task is None:
        if not isinstance(model, ORTModel):
            raise BucketrtError("pass the task: only an export knows its own")
        task = _PIPELINE_TASK.get(model.task)
        if task is None:
            raise BucketrtError(f"a {model.task} export has no pipeline", "call the model directly")
    if tokenizer is None:
        raise BucketrtError(f"the {task} pipeline needs a tokenizer", "pass tokenizer=... (a transformers tokenizer)")
    if isinstance(model, ORTModel):
        kwargs.setdefault("device", model.device)  # keeps the inputs on the CPU, where ONNX Runtime reads them
    ours = _pipeline_classes()
    if task in ours:
        kwargs.pop("model_kwargs", None)
        return ours[task](model=model, tokenizer=tokenizer, task=task, **kwargs)
    import transformers

    with _quiet_model_type_check():
        return transformers.pipeline(task, model=model, tokenizer=tokenizer, **kwargs)


def _folder_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    from bucketrt.export_format.manifest import read_manifest

    manifest = read_manifest(folder)
    if not (manifest.get("files") or {}).get("tokenizer"):
        reason = manifest.get("no_tokenizer") or "the export has no tokenizer"
        raise BucketrtError(f"'{folder}' has no tokenizer ({reason})", "pass tokenizer=...")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _define_pipelines() -> dict:
    from transformers import GenerationConfig, Pipeline

    class QuestionAnsweringPipeline(Pipeline):
        """Extractive QA: the span (start <= end, at most max_answer_len tokens, inside the
        context) with the highest p_start * p_end, each a softmax over the context's tokens.
        One window of max_seq_len tokens (the context is truncated, no stride)."""

        _load_tokenizer = True

        def __call__(self, question=None, context=None, **kwargs):
            if isinstance(question, dict):
                question, context = question["question"], question["context"]
            if isinstance(question, str):
                return super().__call__({"question": question, "context": context}, **kwargs)
            return [self({"question": q, "context": c}, **kwargs) for q, c in zip(question, context)]

        def _sanitize_parameters(self, top_k=None, max_answer_len=None, max_seq_len=None, **kwargs):
            if kwargs:
                raise BucketrtError(f"question-answering takes no {', '.join(sorted(kwargs))}")
            pre = {} if max_seq_len is None else {"max_seq_len": max_seq_len}
            post = {k: v for k, v in (("top_k", top_k), ("max_answer_len", max_answer_len)) if v is not None}
            return pre, {}, post

        def preprocess(self, inputs, max_seq_len: int = 384):
            question, context = inputs["question"], inputs["context"]
            if not question or not context:
                raise BucketrtError("question-answering needs a question and a context")
            encoded = self.tokenizer(
                question,
                context,
                truncation="only_second",
                max_length=max_seq_len,
                return_offsets_mapping=True,
                return_tensors="pt",
            )
            offsets = encoded.pop("offset_mapping")[0].tolist()
            in_context = np.array([s == 1 for s in encoded.sequence_ids(0)])
            return {"inputs": dict(encoded), "offsets": offsets, "in_context": in_context, "context": context}

        def _forward(self, model_inputs):
            out = self.model(**model_inputs["inputs"])
            return {**model_inputs, "start": out.start_logits[0], "end": out.end_logits[0]}

        def postprocess(self, model_outputs, top_k: int = 1, max_answer_len: int = 15):
            mask = model_outputs["in_context"]
            p_start, p_end = (_masked_softmax(_numpy(model_outputs[k]), mask) for k in ("start", "end"))
            n = len(p_start)
            span = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), max_answer_len)
            valid = span & mask[:, None] & mask[None, :]
            scores = np.where(valid, np.outer(p_start, p_end), -1.0)
            best = np.argsort(-scores, axis=None, kind="stable")[: min(top_k, int(valid.sum()))]
            offsets, context = model_outputs["offsets"], model_outputs["context"]
            answers = []
            for flat in best:
                i, j = divmod(int(flat), n)
                start, end = offsets[i][0], offsets[j][1]
                answers.append({"score": float(scores[i, j]), "start": start, "end": end, "answer": context[start:end]})
            return answers[0] if top_k == 1 else answers

    class Text2TextGenerationPipeline(Pipeline):
        """Text in, generated text out: the tokenizer's input_ids and attention_mask to the model's
        generate (with the pipeline's generation defaults, as transformers' pipelines pass them)."""

        _load_tokenizer = True
        _pipeline_calls_generate = True
        _default_generation_config = GenerationConfig(max_new_tokens=256)

        def _sanitize_parameters(self, skip_special_tokens=None, clean_up_tokenization_spaces=None, **generate_kwargs):
            post = {}
            if skip_special_tokens is not None:
                post["skip_special_tokens"] = skip_special_tokens
            if clean_up_tokenization_spaces is not None:
                post["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
            return {}, generate_kwargs, post

        def preprocess(self, text):
            encoded = self.tokenizer(text, return_tensors="pt")
            return {name: encoded[name] for name in ("input_ids", "attention_mask")}

        def _forward(self, model_inputs, **generate_kwargs):
            generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
            return {"output_ids": self.model.generate(**model_inputs, **generate_kwargs)}

        def postprocess(self, model_outputs, skip_special_tokens=True, clean_up_tokenization_spaces=None):
            ids = np.asarray(model_outputs["output_ids"])[0].tolist()
            text = self.tokenizer.decode(
                ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=clean_up_tokenization_spaces
            )
            return [{"generated_text": text}]

    return {"question-answering": QuestionAnsweringPipeline, "text2text-generation": Text2TextGenerationPipeline}


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().float().numpy() if hasattr(value, "detach") else np.asarray(value)


def _masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    scores = np.where(mask, logits.astype(np.float64), -np.inf)
    scores = np.exp(scores - scores.max())
    return scores / scores.sum()
