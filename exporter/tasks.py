"""Export tasks, named as Optimum names them, and the inputs and outputs of each."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BucketrtError

BATCH = "batch_size"
SEQUENCE = "sequence_length"
CHOICES = "num_choices"


@dataclass(frozen=True)
class Task:
    name: str
    model_class: str  # a transformers class name
    outputs: tuple[str, ...]
    # Dynamic dims of every output, in order (None: a fixed size).
    output_dims: tuple[tuple[str | None, ...], ...]
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


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("feature-extraction", "YosoModel", ("last_hidden_state",), ((BATCH, SEQUENCE, None),)),
        Task("fill-mask", "YosoForMaskedLM", ("logits",), ((BATCH, SEQUENCE, None),)),
        Task("text-classification", "YosoForSequenceClassification", ("logits",), ((BATCH, None),)),
        Task("token-classification", "YosoForTokenClassification", ("logits",), ((BATCH, SEQUENCE, None),)),
        Task(
            "question-answering",
            "YosoForQuestionAnswering",
            ("start_logits", "end_logits"),
            ((BATCH, SEQUENCE), (BATCH, SEQUENCE)),
        ),
        Task("multiple-choice", "YosoForMultipleChoice", ("logits",), ((BATCH, CHOICES),), multiple_choice=True),
    )
}

DEFAULT_TASK = "feature-extraction"
_BY_CLASS = {t.model_class: t.name for t in TASKS.values()}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise BucketrtError(f"unknown task '{name}'", f"choose one of: {', '.join(TASKS)}") from None


def infer_task(config) -> str:
    """The task of the first architecture in the config that we know, else feature-extraction."""
    for arch in getattr(config, "architectures", None) or ():
        if arch in _BY_CLASS:
            return _BY_CLASS[arch]
    return DEFAULT_TASK
