"""Running bucketrt exports with ONNX Runtime like transformers models: Optimum's ORTModel classes
(modeling.py), greedy generation (decoding.py, the one loop) and pipelines (pipelines.py)."""

from .causal_lm import greedy_generate
from .generate import Seq2SeqGenerator
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
