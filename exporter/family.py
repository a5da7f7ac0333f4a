"""Model families: what the exporter needs to know about one kind of model.

A family (YOSO, Reformer, ...) is a `Family` subclass in its own module (or package) of the
`families` package, registered with `@register`; `families()` imports every module of that package.
Everything else (sources, the one preparation, export, reference rebuilding, the CLI's listings,
`bucketrt check`, `bench` and `triton`) goes through the family, so a new family touches 2 places:

1. its module or package in exporter/families/: the `Family` subclass and everything it declares
   (below), its presets, its options and their flags, and whether its rows batch independently
   included;
2. its tests (tests/test_export_NAME.py; the shared tests iterate the registry).

Nothing shared changes: no list of families, presets or flags outside exporter/families/. Prose
that names families (README, docs/, the `bucketrt` group's help) is documentation, updated as it
needs. tests/test_exporter_registry.py keeps this true: test_a_new_family_touches_its_module_only
drops a toy family module (a preset, an option with its flag) into the package and lists, exports,
rebuilds and serves it without touching shared code, and
test_no_code_outside_the_families_names_a_family_or_preset fails when code (not prose) outside
exporter/families/ names one. A family that needs a new op adds it to the op catalogue first
(plugins/README.md lists the places a new op touches).

What a family declares:

* `name`, `order`, `model_types` and which configs it claims (`matches`), how to build its config
  and model (`make_config`, `load_config`, `build_model`; the defaults use transformers' classes by
  name);
* `presets`: {NAME: Preset(description, config)}, architectures with random weights;
* what it refuses to export (`check_config`, raising BucketrtError);
* its tasks: the task names it exports and its transformers class prefix (tasks.task_table), or,
  for a family of several model types, the class of each config (`resolve_task`);
* its options (`options`: names and defaults, validated by `check_options`) and `option_flags`,
  {option: help} of boolean options that `bucketrt export` also takes as a flag (--OPTION-NAME);
* `batch_rows_independent`: whether a row's answer is bit-identical inside a same-shape batch and
  alone, recorded in the manifest for serving;
* `patch(model, task, seed, options)`: swaps the data-dependent modules for ones that call
  bucketrt ops and returns a `Patch` with everything the export needs: the components (the ONNX
  files of one export, each an nn.Module traced for the export and run eagerly as the PyTorch
  reference), the manifest entries and the tensors sampled at export;
* `max_length(config)`: the longest sequence an export takes, recorded in the manifest;
* `dummy_input`: the one generator of inputs, for tracing (torch) and for `check` and `bench`
  (numpy), with `input_sizes` mapping the check's sizes onto a component's dims.

"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from bucketrt.errors import BucketrtError
from bucketrt.export_format.tasks import BATCH, CHOICES, SEQUENCE, Task

from .presets import Preset

# Example sizes for tracing: distinct and above 1, so that the exporter keeps every axis symbolic.
EXAMPLE_BATCH, EXAMPLE_CHOICES, EXAMPLE_SEQUENCE = 2, 3, 13


def fingerprint(tensors) -> str:
    """sha256 over a sequence of tensors (or (name, tensor) pairs), in order: names, dtypes, shapes
    and bytes. The one hash of the manifest: weights_sha256 and patch_sha256."""
    digest = hashlib.sha256()
    for item in tensors:
        if isinstance(item, tuple):
            name, tensor = item
            digest.update(name.encode())
        else:
            tensor = item
        tensor = tensor.detach().cpu().contiguous()
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


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
    # A causal LM's step: the graph gains the optional input `logits_to_keep` (exporter/logits_to_keep).
    logits_to_keep: bool = False
    # Names for outputs' dims where the traced expression would be unreadable ({output: {axis: name}}).
    output_dims: dict = field(default_factory=dict)
    # Names for the nodes that make outputs ({output: node name}), where the node fails on a caller's
    # inconsistent inputs: ONNX Runtime's error names the failing node, and then says what to fix.
    output_nodes: dict = field(default_factory=dict)

    def kwargs(self, feeds: dict) -> dict:
        return self.pack_inputs(feeds) if self.pack_inputs is not None else feeds

    @property
    def file_name(self) -> str:
        return f"{self.name}.onnx"


@dataclass(frozen=True)
class Patch:
    """Everything `Family.patch` gives the export, and what checks a rebuilt reference."""

    mode: str  # a short description of how the model computes, e.g. "lsh" or "expectation"
    components: list[Component]  # the ONNX files of the export, in order
    manifest: dict = field(default_factory=dict)  # family-specific manifest entries (top level)
    sampled: tuple[torch.Tensor, ...] = ()  # everything drawn at export (projections, rotations)

    @property
    def sha256(self) -> str | None:
        """The manifest's patch_sha256: the fingerprint of the sampled tensors (None: nothing sampled)."""
        return fingerprint(self.sampled) if self.sampled else None


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
    # Where the family is listed in messages and, should two families claim a config, which wins
    # (the lower); the claims of bucketrt's families are disjoint.
    order: int = 100
    config_class: str = ""  # the transformers config class that presets instantiate
    tasks: dict[str, Task] = {}  # tasks.task_table(PREFIX, task names...)
    default_task: str = "feature-extraction"
    # Family-specific export options and their defaults (e.g. YOSO's mask_padding), whose types
    # the given values must have; recorded in the manifest and passed to `patch`.
    options: dict = {}
    # {option: help}: boolean options (default false) that `bucketrt export` also takes as a flag,
    # --OPTION-NAME, which sets the option to true.
    option_flags: dict[str, str] = {}
    # {name: Preset(description, config)}: the family's built-in architectures (presets.py).
    presets: dict[str, Preset] = {}
    # Whether each row's answer is bit-identical inside a same-shape batch and alone, so that
    # serving may run same-shape requests in one call (recorded in the manifest at export).
    batch_rows_independent: bool = False

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

    def max_length(self, config: dict) -> int | None:
        """The longest sequence an export takes (None: no limit), from the config's to_dict() (or
        a manifest's "config"): the manifest's max_sequence_length."""
        limit = config.get("max_position_embeddings")
        return int(limit) if limit else None

    # -- tasks ---------------------------------------------------------------------------------
    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise BucketrtError(
                f"unknown task '{name}' for {self.name} models", f"choose one of: {', '.join(self.tasks)}"
            ) from None

    def resolve_task(self, task: Task, config) -> Task:
        """The task for this config: `tasks` as declared, unless the family's transformers class
        depends on the config (a family of several model types names their own classes here)."""
        return task

    def infer_task(self, config) -> str:
        """The task of the first architecture in the config that we know, else the default."""
        by_class = {t.model_class: t.name for t in self.tasks.values()}
        for arch in getattr(config, "architectures", None) or ():
            if arch in by_class:
                return by_class[arch]
        return self.default_task

    # -- export --------------------------------------------------------------------------------
    def check_options(self, options: dict) -> dict:
        """The options (KEY or KEY-WITH-DASHES) with defaults filled in; BucketrtError for an
        option this family lacks or a value of the wrong type."""
        given = {str(key).replace("-", "_"): value for key, value in options.items()}
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            flags = ", ".join("--" + o.replace("_", "-") for o in unknown)
            known = ", ".join(f"{k}={_json(v)}" for k, v in self.options.items())
            raise BucketrtError(
                f"{flags} does not apply to {self.name} models",
                f"{self.name} options (--option KEY=VALUE, defaults): {known}"
                if known
                else f"{self.name} models take no options",
            )
        for key, value in given.items():
            default = self.options[key]
            if type(value) is not type(default) and not (isinstance(default, float) and type(value) is int):
                raise BucketrtError(
                    f"option {key}={_json(value)} is not a {type(default).__name__}",
                    f"e.g. --option {key}={_json(default)}",
                )
        return {**self.options, **given}

    def patch(self, model, task: Task, seed: int, options: dict) -> Patch:
        """Makes `model` (eval mode) traceable with bucketrt ops, in place; `options` are
        check_options'. Returns the components and everything the manifest records."""
        raise NotImplementedError

    def components(self, model, task: Task) -> list[Component]:
        """One component, "model", taking the task's inputs and returning its outputs."""
        from torch.export import Dim

        config = model.config
        names = task.input_names(config)
        limit = self.max_length(config.to_dict())
        sequence = max(2, min(EXAMPLE_SEQUENCE, limit or EXAMPLE_SEQUENCE))
        sizes = {BATCH: EXAMPLE_BATCH, CHOICES: EXAMPLE_CHOICES, SEQUENCE: sequence}
        inputs = self.example_inputs(config, {name: [sizes[d] for d in task.input_dims] for name in names})
        dims = {BATCH: Dim(BATCH), CHOICES: Dim(CHOICES), SEQUENCE: Dim(SEQUENCE, max=limit)}
        dynamic = {name: {axis: dims[sym] for axis, sym in enumerate(task.input_dims)} for name in names}
        return [Component("model", TaskOutputs(model, task.outputs), names, task.outputs, inputs, dynamic)]

    # -- inputs: one generator for tracing (torch) and for check and bench (numpy) -------------
    def dummy_input(
        self, name: str, shape: list[int], dtype: str, config: dict, rng: np.random.Generator, padding: bool
    ):
        """A random input: ids in the vocabulary; masks of ones where, with `padding`, the last
        batch row has its final quarter (at least one position) masked; token types in
        type_vocab_size; float inputs (states, past key/values) standard normal, in float32."""
        length = shape[-1] if shape else 0
        if name == "input_ids":
            return rng.integers(0, config.get("vocab_size", 2), size=shape, dtype=np.int64)
        if name.endswith("attention_mask"):
            mask = np.ones(shape, dtype=np.int64)
            if padding and length > 1:
                mask[-1, ..., length - max(1, length // 4) :] = 0
            return mask
        if name == "token_type_ids":
            return rng.integers(0, config.get("type_vocab_size", 1), size=shape, dtype=np.int64)
        if np.dtype(dtype).kind == "f":
            return rng.standard_normal(shape).astype(np.float32)
        return np.zeros(shape, dtype=np.dtype(dtype))

    def dummy_inputs(
        self, config: dict, shapes: dict[str, list[int]], dtypes: dict[str, str], rng, padding: bool
    ) -> dict:
        """dummy_input for each named input, in order (int64 unless `dtypes` says otherwise)."""
        return {
            name: self.dummy_input(name, shape, dtypes.get(name, "int64"), config, rng, padding)
            for name, shape in shapes.items()
        }

    def example_inputs(self, config, shapes: dict[str, list[int]], dtypes: dict[str, str] | None = None) -> dict:
        """Tracing inputs (torch, seed 0, no padding) from `dummy_inputs`."""
        feeds = self.dummy_inputs(config.to_dict(), shapes, dtypes or {}, np.random.default_rng(0), padding=False)
        return {name: torch.from_numpy(value) for name, value in feeds.items()}

    def input_sizes(self, component: str, sizes: dict[str, int]) -> dict[str, int]:
        """A component's dim sizes from the check's batch, sequence and choices sizes."""
        return dict(sizes)

    def make_inputs(
        self, manifest: dict, component: dict, sizes: dict, rng: np.random.Generator, padding: bool
    ) -> dict:
        """Random inputs (numpy) for `component` (its manifest entry) at `sizes`."""
        dims = self.input_sizes(component["name"], sizes)
        shapes, dtypes = {}, {}
        for spec in component["inputs"]:
            shape = [dims.get(d, d) if isinstance(d, str) else d for d in spec["shape"]]
            if any(not isinstance(d, int) for d in shape):
                raise BucketrtError(f"input '{spec['name']}' has an unknown dim in {spec['shape']}")
            shapes[spec["name"]], dtypes[spec["name"]] = shape, spec.get("dtype", "int64")
        return self.dummy_inputs(manifest.get("config", {}), shapes, dtypes, rng, padding)


def _json(value) -> str:
    return json.dumps(value)


# -- the registry ----------------------------------------------------------------------------
_REGISTRY: dict[str, Family] = {}
_discovered = False


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: registers a family (one instance) under its name, and names its presets."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"family {cls.__name__} needs a name of its own, got {cls.name!r}")
    for option in cls.option_flags:
        if cls.options.get(option, None) is not False:
            raise ValueError(f"family {cls.name}: the flag of option '{option}' needs a boolean option, default false")
    cls.presets = {name: replace(preset, name=name, family=cls.name) for name, preset in cls.presets.items()}
    _REGISTRY[cls.name] = cls()
    return cls


def _discover() -> None:
    """Imports every module of the families package: each registers its family."""
    global _discovered
    package = importlib.import_module(f"{__package__}.families")
    _discovered = True
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def families() -> list[Family]:
    """Every registered family, in `order`."""
    if not _discovered:
        _discover()
    return sorted(_REGISTRY.values(), key=lambda f: (f.order, f.name))


def option_flags() -> dict[str, str]:
    """{option: help} of the flags that families give their boolean options (`--mask-padding` for
    YOSO's mask_padding): each sets the option to true. A flag two families declare is one flag,
    with the first family's help."""
    flags: dict[str, str] = {}
    for family in families():
        for option, text in family.option_flags.items():
            flags.setdefault(option, text)
    return flags


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
