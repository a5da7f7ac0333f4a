"""Running bucketrt exports with ONNX Runtime like transformers models: Optimum's ORTModel classes
(modeling.py), greedy generation (decoding.py, the one loop) and pipelines (pipelines.py)."""

from .modeling import (
    ORTModel,
    ORTModelForCausalLM,
    ORTModelForFeatureExtraction,
    ORTModelForMaskedLM,
    ORTModelForMultipleChoice,
    ORTModelForQuestionAnswering,
    ORTModelForSeq2SeqLM,
    ORTModelForSequenceClassification,
    ORTModelForTokenClassification,
    Seq2SeqGenerator,
    greedy_generate,
)
from .pipelines import pipeline

__all__ = [
    "ORTModel",
    "ORTModelForCausalLM",
    "ORTModelForFeatureExtraction",
    "ORTModelForMaskedLM",
    "ORTModelForMultipleChoice",
    "ORTModelForQuestionAnswering",
    "ORTModelForSeq2SeqLM",
    "ORTModelForSequenceClassification",
    "ORTModelForTokenClassification",
    "Seq2SeqGenerator",
    "greedy_generate",
    "pipeline",
]
