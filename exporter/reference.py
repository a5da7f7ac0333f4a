"""The PyTorch side of an export, rebuilt from its manifest: for `bucketrt check` and benchmarks."""

from __future__ import annotations

import numpy as np
import torch

from .errors import BucketrtError
from .manifest import read_manifest
from .sources import Source, build_model, load_config
from .tasks import BATCH, CHOICES, SEQUENCE, get_task
from .yoso import fingerprint, patch_model


def load_reference(output_dir) -> torch.nn.Module:
    """The patched PyTorch model (eval) of an export, with identical weights and projections.

    Presets get their weights from the recorded seed; folders and hub models are reloaded. The
    weights and projections are compared with the fingerprints recorded at export, so a changed
    source folder or a different random stream is reported instead of passing as a mismatch.
    """
    manifest = read_manifest(output_dir)
    source = Source(
        manifest.get("source_kind", "preset"),
        manifest["source"],
        manifest.get("revision"),
    )
    config, source = load_config(source, manifest.get("config_overrides") or {})
    task = get_task(manifest["task"])
    model = build_model(source, config, task, manifest["seed"])
    expected = manifest.get("weights_sha256")
    if expected and fingerprint(sorted(model.state_dict().items())) != expected:
        raise BucketrtError(
            f"the weights of {source.describe()} differ from those exported to '{output_dir}'",
            "the source changed since the export; export again",
        )
    info = patch_model(model, manifest["seed"], bool(manifest.get("mask_padding", False)))
    if info.mode != manifest["mode"]:
        raise BucketrtError(f"the rebuilt model is in {info.mode} mode, the export in {manifest['mode']} mode", "export again")
    projections = manifest.get("projections") or {}
    if projections.get("sha256") and projections["sha256"] != info.projections_sha256:
        raise BucketrtError(
            "the hash projections regenerated from the seed differ from those exported "
            f"(torch {torch.__version__} draws a different random stream?)",
            "export again with this torch",
        )
    model.bucketrt_manifest = manifest
    return model


def run_reference(model: torch.nn.Module, manifest: dict, feeds: dict) -> dict[str, np.ndarray]:
    """Runs the reference model on numpy (or torch) inputs; returns the manifest's outputs by name."""
    kwargs = {name: torch.as_tensor(np.asarray(value)) for name, value in feeds.items()}
    with torch.no_grad():
        result = model(**kwargs, return_dict=True)
    return {o["name"]: result[o["name"]].detach().cpu().numpy() for o in manifest["outputs"]}


def make_inputs(
    manifest: dict,
    batch_size: int = 2,
    sequence_length: int = 128,
    num_choices: int = 2,
    seed: int = 0,
    padding: bool = True,
) -> dict[str, np.ndarray]:
    """Random int64 inputs for an export: ids in the vocabulary; with `padding`, the last batch row
    has a quarter of its positions (at least one) masked at the end."""
    config = manifest.get("config", {})
    sizes = {BATCH: batch_size, SEQUENCE: sequence_length, CHOICES: num_choices}
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in manifest["inputs"]:
        shape = [sizes[d] if isinstance(d, str) and d in sizes else d for d in spec["shape"]]
        if any(not isinstance(d, int) for d in shape):
            raise BucketrtError(f"input '{spec['name']}' has an unknown dim in {spec['shape']}")
        name = spec["name"]
        if name == "input_ids":
            feeds[name] = rng.integers(0, config.get("vocab_size", 2), size=shape, dtype=np.int64)
        elif name == "attention_mask":
            mask = np.ones(shape, dtype=np.int64)
            if padding and sequence_length > 1:
                mask[-1, ..., sequence_length - max(1, sequence_length // 4):] = 0
            feeds[name] = mask
        elif name == "token_type_ids":
            feeds[name] = rng.integers(0, config.get("type_vocab_size", 1), size=shape, dtype=np.int64)
        else:
            feeds[name] = np.zeros(shape, dtype=np.int64)
    return feeds
