"""The one preparation of a source model, for the export and for the rebuild of its reference.

    prepared = prepare(source, task=..., seed=..., overrides=..., options=...)
    prepared.weights_sha256   # the manifest's fingerprint of the weights
    patch = prepared.patch()  # the family's patch: components, manifest entries, sampled tensors

Both `export` (onnx_export.py) and `load_reference` (rebuild.py) go through `prepare`, so that the
rebuilt reference is the exported model: the same source load, config overrides, family checks,
options, task, seeded weights and patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from bucketrt.errors import BucketrtError
from bucketrt.export_format.tasks import Task

from .family import Family, Patch, fingerprint
from .sources import Source


@dataclass
class Prepared:
    """A source model ready to patch: built, fp32, eval mode, not patched yet."""

    source: Source  # as resolved (a hub id gains its revision)
    family: Family
    task: Task
    model: torch.nn.Module
    seed: int
    overrides: dict  # the config overrides applied
    options: dict  # the family's options, checked, defaults filled in

    @cached_property
    def weights_sha256(self) -> str:
        """The fingerprint of the weights before patching: the manifest's weights_sha256."""
        return fingerprint(sorted(self.model.state_dict().items()))

    def patch(self) -> Patch:
        """Patches the model in place (eval mode) with the family's bucketrt modules."""
        patch = self.family.patch(self.model, self.task, self.seed, self.options)
        self.model.eval()
        return patch


def prepare(
    source: Source,
    *,
    task: str | None = None,
    seed: int = 0,
    overrides: dict | None = None,
    options: dict | None = None,
    family: str | None = None,
) -> Prepared:
    """Loads the source's config, applies the overrides, checks the options, picks the task (None:
    from the config) and builds the model with weights from the source or, for presets and new
    heads, from `seed`. `family`: the family the model must be of (a rebuild: the export's).
    Raises BucketrtError for anything the caller can fix."""
    overrides = dict(overrides or {})
    found, config, source = source.load_config(overrides)
    if family is not None and found.name != family:
        raise BucketrtError(f"'{source.ref}' is now a {found.name} model, the export a {family} one", "export again")
    checked = found.check_options(dict(options or {}))
    task_spec = found.resolve_task(found.get_task(task or found.infer_task(config)), config)
    model = source.build_model(found, config, task_spec, seed)
    return Prepared(source, found, task_spec, model, seed, overrides, checked)
