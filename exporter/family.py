"""Model families: what the exporter needs to know about one kind of model.

A family (YOSO, Reformer, ...) lives in its own module of this package, which defines `FAMILY`,
an instance of a `Family` subclass, and is named in `_FAMILY_MODULES` below. Everything else in
the exporter (sources, export, reference rebuilding, `bucketrt check` and `bench`) goes through
the family, so adding one touches no shared code path:

* which configs it claims (`matches`) and how to build its config and model (`make_config`,
  `load_config`, `build_model`; the defaults use transformers' classes by name);
* what it refuses to export (`check_config`, raising BucketrtError);
* its tasks (Optimum names -> transformers classes, outputs and dynamic dims);
* `patch`: swapping the data-dependent modules for ones that call bucketrt ops, returning what
  the manifest records;
* `components`: the ONNX files of one export (one "model" by default; seq2seq models have an
  encoder and decoders), each an nn.Module that is traced for the export and run eagerly as the
  PyTorch reference;
* `make_inputs`: random inputs for one component, for `check` and `bench`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import BucketrtError
from .tasks import BATCH, CHOICES, SEQUENCE, Task

# Each names a module of this package that defines FAMILY. Order matters only when two families
# could claim the same config: the first match wins.
_FAMILY_MODULES = ("yoso", "reformer", "switch", "lsg")

# Example sizes for tracing: distinct and above 1, so that the exporter keeps every axis symbolic.
EXAMPLE_BATCH, EXAMPLE_CHOICES, EXAMPLE_SEQUENCE = 2, 3, 13

# Default TensorRT profile ranges (see Family.dim_ranges); `bucketrt build --max-shapes` overrides.
DEFAULT_MAX_BATCH, DEFAULT_MAX_CHOICES = 8, 4
DEFAULT_OPT_SEQUENCE = 128
DEFAULT_MAX_SEQUENCE = 512  # models without a position limit (Switch's relative positions)


def sequence_limit(manifest: dict) -> int:
    """The longest sequence of an export: recorded at export (max_sequence_length), else the
    config's max_position_embeddings (older manifests), else DEFAULT_MAX_SEQUENCE."""
    limit = manifest.get("max_sequence_length") or manifest.get("config", {}).get("max_position_embeddings")
    return int(limit) if limit else DEFAULT_MAX_SEQUENCE


@dataclass(frozen=True)
class Patch:
    """What `Family.patch` did, for the manifest and for checking a rebuilt reference."""

    mode: str  # a short description of how the model computes, e.g. "lsh" or "expectation"
    manifest: dict = field(default_factory=dict)  # family-specific manifest entries (top level)
    sha256: str | None = None  # fingerprint of everything sampled at export (projections, rotations)


@dataclass
class Component:
    """One ONNX file of an export.

    `module(**inputs)` returns a tuple in `output_names` order (its forward names its inputs:
    torch.export cannot give var-kwargs dynamic shapes). It is traced for the export, and
    the same module, run eagerly (bucketrt ops go to their PyTorch references), is the reference
    that `bucketrt check` compares ONNX Runtime with.
    """

    name: str  # the file is NAME.onnx
    module: torch.nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # Tracing inputs, and their dynamic axes ({input: {axis: torch.export.Dim}}).
    example_inputs: dict = field(default_factory=dict)
    dynamic_shapes: dict = field(default_factory=dict)
    # Maps feeds by ONNX input name to the module's keyword arguments, where they differ (e.g. one
    # tuple parameter flattened into past_key_values.* inputs). None: the names are the same.
    pack_inputs: Callable[[dict], dict] | None = None

    def kwargs(self, feeds: dict) -> dict:
        return self.pack_inputs(feeds) if self.pack_inputs is not None else feeds

    @property
    def file_name(self) -> str:
        return f"{self.name}.onnx"


class TaskOutputs(torch.nn.Module):
    """Default component module: calls an encoder-style HF model, returns the task's outputs.

    Named parameters rather than **inputs: torch.export cannot take dynamic shapes for var-kwargs.
    """

    def __init__(self, model: torch.nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        result = self.model(**inputs, return_dict=True)
        return tuple(result[name] for name in self.outputs)


class Family:
    """Defaults for an encoder-only model with input_ids/attention_mask(/token_type_ids) inputs."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    config_class: str = ""  # the transformers config class that presets instantiate
    tasks: dict[str, Task] = {}
    default_task: str = "feature-extraction"
    # Family-specific export options and their defaults (e.g. YOSO's mask_padding); recorded in the
    # manifest and passed to `patch`.
    options: dict = {}

    # -- configs and models ------------------------------------------------------------------
    def matches(self, config: dict) -> bool:
        """Whether this family exports a model with this config.json content."""
        return config.get("model_type") in self.model_types

    def make_config(self, values: dict):
        """The config of a preset."""
        import transformers

        return getattr(transformers, self.config_class)(**values)

    def load_config(self, ref: str, **kwargs):
        """The config of a folder or hub id (kwargs: revision, local_files_only)."""
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(ref, **kwargs)

    def check_config(self, config) -> None:
        """Raises BucketrtError for what this family cannot export."""

    def model_class(self, task: Task):
        import transformers

        return getattr(transformers, task.model_class)

    def build_model(self, task: Task, config, ref: str | None, **kwargs):
        """A new model (ref None: random weights from torch's current seed) or the weights at ref."""
        cls = self.model_class(task)
        if ref is None:
            return cls(config)
        return cls.from_pretrained(ref, config=config, **kwargs)

    # -- tasks ---------------------------------------------------------------------------------
    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise BucketrtError(
                f"unknown task '{name}' for {self.name} models", f"choose one of: {', '.join(self.tasks)}"
            ) from None

    def infer_task(self, config) -> str:
        """The task of the first architecture in the config that we know, else the default."""
        by_class = {t.model_class: t.name for t in self.tasks.values()}
        for arch in getattr(config, "architectures", None) or ():
            if arch in by_class:
                return by_class[arch]
        return self.default_task

    # -- export --------------------------------------------------------------------------------
    def check_options(self, options: dict) -> dict:
        """The options with defaults filled in; BucketrtError for an option this family lacks."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            flags = ", ".join("--" + o.replace("_", "-") for o in unknown)
            raise BucketrtError(f"{flags} does not apply to {self.name} models")
        return {**self.options, **options}

    def patch(self, model, seed: int, options: dict) -> Patch:
        """Makes `model` (eval mode) traceable with bucketrt ops, in place."""
        raise NotImplementedError

    def components(self, model, task: Task) -> list[Component]:
        """One component, "model", taking the task's inputs and returning its outputs."""
        from torch.export import Dim

        config = model.config
        names = task.input_names(config)
        sequence = max(2, min(EXAMPLE_SEQUENCE, self.max_length(config) or EXAMPLE_SEQUENCE))
        shape = (EXAMPLE_BATCH, EXAMPLE_CHOICES, sequence) if task.multiple_choice else (EXAMPLE_BATCH, sequence)
        generator = torch.Generator().manual_seed(0)
        inputs = {"input_ids": torch.randint(0, config.vocab_size, shape, generator=generator, dtype=torch.int64)}
        inputs["attention_mask"] = torch.ones(shape, dtype=torch.int64)
        if "token_type_ids" in names:
            inputs["token_type_ids"] = torch.zeros(shape, dtype=torch.int64)
        dims = {BATCH: Dim(BATCH), CHOICES: Dim(CHOICES), SEQUENCE: Dim(SEQUENCE, max=self.max_length(config))}
        dynamic = {name: {axis: dims[sym] for axis, sym in enumerate(task.input_dims)} for name in names}
        return [Component("model", TaskOutputs(model, task.outputs), names, task.outputs, inputs, dynamic)]

    def max_length(self, config) -> int | None:
        """The longest sequence the model takes (None: no limit)."""
        return getattr(config, "max_position_embeddings", None)

    # -- TensorRT profiles ---------------------------------------------------------------------
    def dim_ranges(self, manifest: dict) -> dict[str, tuple[int, int, int]]:
        """Default (min, opt, max) of each dynamic dim name, for engines built without shapes:
        batch 1/1/DEFAULT_MAX_BATCH, sequences 1/min(128, limit)/limit, where the limit is the
        model's max length (DEFAULT_MAX_SEQUENCE for models without one)."""
        limit = sequence_limit(manifest)
        return {
            BATCH: (1, 1, DEFAULT_MAX_BATCH),
            CHOICES: (1, 2, DEFAULT_MAX_CHOICES),
            SEQUENCE: (1, min(DEFAULT_OPT_SEQUENCE, limit), limit),
        }

    # -- inputs for check and bench ------------------------------------------------------------
    def make_inputs(self, manifest: dict, component: dict, sizes: dict, rng: np.random.Generator, padding: bool) -> dict:
        """Random inputs for `component` (its manifest entry): ids in the vocabulary; with
        `padding`, the last batch row has its final quarter (at least one position) masked."""
        config = manifest.get("config", {})
        length = sizes[SEQUENCE]
        feeds = {}
        for spec in component["inputs"]:
            shape = [sizes[d] if isinstance(d, str) and d in sizes else d for d in spec["shape"]]
            if any(not isinstance(d, int) for d in shape):
                raise BucketrtError(f"input '{spec['name']}' has an unknown dim in {spec['shape']}")
            name = spec["name"]
            if name == "input_ids":
                feeds[name] = rng.integers(0, config.get("vocab_size", 2), size=shape, dtype=np.int64)
            elif name == "attention_mask":
                mask = np.ones(shape, dtype=np.int64)
                if padding and length > 1:
                    mask[-1, ..., length - max(1, length // 4):] = 0
                feeds[name] = mask
            elif name == "token_type_ids":
                feeds[name] = rng.integers(0, config.get("type_vocab_size", 1), size=shape, dtype=np.int64)
            else:
                feeds[name] = np.zeros(shape, dtype=np.dtype(spec.get("dtype", "int64")))
        return feeds


def families() -> list[Family]:
    return [importlib.import_module(f".{name}", __package__).FAMILY for name in _FAMILY_MODULES]


def family_named(name: str) -> Family:
    for family in families():
        if family.name == name:
            return family
    raise BucketrtError(f"unknown model family '{name}'", f"bucketrt exports: {', '.join(f.name for f in families())}")


def family_for(config: dict) -> Family:
    """The family that claims a config (config.json's content); BucketrtError when none does."""
    for family in families():
        if family.matches(config):
            return family
    supported = ", ".join(t for f in families() for t in f.model_types)
    raise BucketrtError(
        f"model type '{config.get('model_type', 'unknown')}' is not supported; bucketrt exports: {supported}"
    )
