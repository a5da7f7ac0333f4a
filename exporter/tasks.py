"""Export tasks, named as Optimum names them, and the inputs and outputs of each.

Each model family (exporter/family.py) has its own table of tasks."""

from __future__ import annotations

from dataclasses import dataclass

BATCH = "batch_size"
SEQUENCE = "sequence_length"
CHOICES = "num_choices"


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
