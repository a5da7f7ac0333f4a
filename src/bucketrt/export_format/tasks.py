"""Export tasks, named as Optimum names them: the one table of heads, inputs and outputs.

A family (exporter/families/) names the tasks it exports and its transformers class prefix;
`task_table("Yoso", "fill-mask", ...)` then gives YosoForMaskedLM with the outputs below. The
runtime (bucketrt.runtime.modeling) reads the same table: which ORTModel class runs a task's export
and which transformers ModelOutput class its outputs come in."""

from __future__ import annotations

from dataclasses import dataclass

# The names of the graphs' dynamic dims, as Optimum names them.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
CHOICES = "num_choices"
# A seq2seq export's: the encoder's tokens, the decoder's new tokens, the decoder's cached ones.
ENCODER_SEQUENCE = "encoder_sequence_length"
DECODER_SEQUENCE = "decoder_sequence_length"
PAST_SEQUENCE = "past_decoder_sequence_length"
# A causal LM's step with a cache: the cached tokens, and the attention mask's length (cached + new);
# a sliding-window layer's cached tokens (at most its window less one that it keeps).
CACHED_SEQUENCE = "past_sequence_length"
TOTAL_SEQUENCE = "total_sequence_length"
WINDOW_CACHED_SEQUENCE = "sliding_past_sequence_length"
# A causal LM's step whose past and present share one buffer (the MoE family's shared_kv_buffer
# option): the tokens the buffer holds, at least the attention mask's length.
BUFFER_SEQUENCE = "buffer_sequence_length"


@dataclass(frozen=True)
class Head:
    """A task's transformers class suffix (after the family's prefix) and its outputs; the runtime
    class (Optimum's name, bucketrt.runtime) and the transformers.modeling_outputs class it returns."""

    suffix: str
    outputs: tuple[str, ...]
    runtime_class: str
    output_class: str
    multiple_choice: bool = False


HEADS: dict[str, Head] = {
    "feature-extraction": Head("Model", ("last_hidden_state",), "ORTModelForFeatureExtraction", "BaseModelOutput"),
    "fill-mask": Head("ForMaskedLM", ("logits",), "ORTModelForMaskedLM", "MaskedLMOutput"),
    "text-classification": Head(
        "ForSequenceClassification", ("logits",), "ORTModelForSequenceClassification", "SequenceClassifierOutput"
    ),
    "token-classification": Head(
        "ForTokenClassification", ("logits",), "ORTModelForTokenClassification", "TokenClassifierOutput"
    ),
    "question-answering": Head(
        "ForQuestionAnswering",
        ("start_logits", "end_logits"),
        "ORTModelForQuestionAnswering",
        "QuestionAnsweringModelOutput",
    ),
    "multiple-choice": Head(
        "ForMultipleChoice", ("logits",), "ORTModelForMultipleChoice", "MultipleChoiceModelOutput", multiple_choice=True
    ),
    "text-generation": Head("ForCausalLM", ("logits",), "ORTModelForCausalLM", "CausalLMOutput"),
    # Seq2seq: the logits of the decoder (whose components add present.* key/values).
    "text2text-generation": Head("ForConditionalGeneration", ("logits",), "ORTModelForSeq2SeqLM", "Seq2SeqLMOutput"),
    # The encoder stack of an encoder-decoder model alone (bucketrt's name; Optimum has none).
    "feature-extraction-encoder": Head(
        "EncoderModel", ("last_hidden_state",), "ORTModelForFeatureExtraction", "BaseModelOutput"
    ),
}

# Tasks whose exports generate (they get a generation_config.json and a `generate`).
GENERATION_TASKS = ("text-generation", "text2text-generation")


@dataclass(frozen=True)
class Task:
    name: str
    model_class: str  # a transformers class name
    outputs: tuple[str, ...]
    multiple_choice: bool = False

    @property
    def input_dims(self) -> tuple[str, ...]:
        return (BATCH, CHOICES, SEQUENCE) if self.multiple_choice else (BATCH, SEQUENCE)

    def input_names(self, config) -> tuple[str, ...]:
        """input_ids, attention_mask, and token_type_ids only where the model has several types."""
        names = ("input_ids", "attention_mask")
        if getattr(config, "type_vocab_size", 1) > 1:
            names += ("token_type_ids",)
        return names


def task_table(prefix: str, *names: str, classes: dict[str, str] | None = None) -> dict[str, Task]:
    """The tasks `names` of a family whose transformers classes are PREFIX + the head's suffix;
    `classes` names the exceptions (e.g. Reformer's text-generation, ReformerModelWithLMHead)."""
    classes = classes or {}
    unknown = sorted(set(names) - set(HEADS))
    if unknown or set(classes) - set(names):
        raise ValueError(f"tasks not in tasks.HEADS or not exported: {unknown or sorted(set(classes) - set(names))}")
    return {
        name: Task(
            name, classes.get(name, prefix + HEADS[name].suffix), HEADS[name].outputs, HEADS[name].multiple_choice
        )
        for name in names
    }
