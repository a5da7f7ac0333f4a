"""The PyTorch side of an export, rebuilt from its manifest: for `bucketrt check` and benchmarks.

The rebuild prepares the recorded source exactly as the export did (preparation.prepare), then
checks the weights and the sampled tensors against the fingerprints recorded at export."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bucketrt.errors import BucketrtError
from bucketrt.export_format.manifest import component as manifest_component
from bucketrt.export_format.manifest import read_manifest
from bucketrt.export_format.tasks import BATCH, CHOICES, SEQUENCE

from .family import Component, family_named
from .preparation import Prepared, prepare
from .sources import Source


@dataclass
class Reference:
    """An export's model in PyTorch: the patched model and the modules traced for each component."""

    manifest: dict
    model: torch.nn.Module
    components: dict[str, Component]

    def run(self, feeds: dict, component: str | None = None) -> dict[str, np.ndarray]:
        """Runs a component (default: the first) eagerly on numpy (or torch) inputs; returns its
        outputs by name. bucketrt ops run their PyTorch references."""
        entry = manifest_component(self.manifest, component)
        target = self.components[entry["name"]]
        kwargs = {name: torch.as_tensor(np.asarray(value)) for name, value in feeds.items()}
        with torch.no_grad():
            result = target.module(**target.kwargs(kwargs))
        return {name: value.detach().cpu().numpy() for name, value in zip(target.output_names, result)}


def _rebuild(output_dir, manifest: dict | None = None) -> tuple[dict, Prepared]:
    """(manifest, prepared): the export's transformers model rebuilt from its manifest (read from
    `output_dir` unless given), unpatched, with the weights checked against the fingerprint
    recorded at export."""
    if manifest is None:
        manifest = read_manifest(output_dir)
    prepared = prepare(
        Source.from_manifest(manifest),
        task=manifest["task"],
        seed=manifest["seed"],
        overrides=manifest.get("config_overrides") or {},
        options=manifest.get("options") or {},
        family=manifest["family"],
    )
    expected = manifest.get("weights_sha256")
    if expected and prepared.weights_sha256 != expected:
        raise BucketrtError(
            f"the weights of {prepared.source.describe()} differ from those exported to '{output_dir}'",
            "the source changed since the export; export again",
        )
    return manifest, prepared


def load_transformers_model(output_dir) -> torch.nn.Module:
    """The export's model as transformers runs it (eval, not patched: its own attention and routing),
    with the export's weights: the PyTorch peer for benchmarks where Hugging Face's code runs on CPU
    (Reformer's LSH attention, Switch). Its random LSH rotations are not the export's."""
    return _rebuild(output_dir)[1].model.eval()


def load_reference(output_dir, manifest: dict | None = None) -> Reference:
    """The patched PyTorch model (eval) of an export, with identical weights and sampled tensors.

    Presets get their weights from the recorded seed; folders and hub models are reloaded. The
    weights and everything sampled at export are compared with the fingerprints recorded then, so a
    changed source folder or a different random stream is reported instead of passing as a mismatch.
    `manifest`: the export's, where the caller has read it already (default: read from output_dir).
    """
    manifest, prepared = _rebuild(output_dir, manifest)
    patch = prepared.patch()
    if patch.mode != manifest["mode"]:
        raise BucketrtError(
            f"the rebuilt model is in {patch.mode} mode, the export in {manifest['mode']} mode", "export again"
        )
    if manifest.get("patch_sha256") and manifest["patch_sha256"] != patch.sha256:
        raise BucketrtError(
            "the random tensors regenerated from the seed differ from those exported "
            f"(torch {torch.__version__} draws a different random stream, or an older bucketrt, which hashed "
            "Reformer rotations differently, made the export)",
            "export again with this torch and bucketrt",
        )
    return Reference(manifest, prepared.model, {c.name: c for c in patch.components})


def make_inputs(
    manifest: dict,
    batch_size: int = 2,
    sequence_length: int = 128,
    num_choices: int = 2,
    seed: int = 0,
    padding: bool = True,
    component: str | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs for a component of an export (default: the first), from its family: for
    encoders, int64 ids in the vocabulary; with `padding`, the last batch row has a quarter of its
    positions (at least one) masked at the end."""
    family = family_named(manifest["family"])
    sizes = {BATCH: batch_size, SEQUENCE: sequence_length, CHOICES: num_choices}
    entry = manifest_component(manifest, component)
    return family.make_inputs(manifest, entry, sizes, np.random.default_rng(seed), padding)
