"""Where a model comes from: a built-in preset, a local save_pretrained folder, or a hub id.

Each is a type of its own (`PresetSource`, `FolderSource`, `HubSource`) that loads the config,
builds the model and copies the tokenizer its way. `resolve_source` decides which one a MODEL
argument names; `Source.from_manifest` which one an export recorded (its "source_kind" and
"source", and for the hub its "revision").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

import torch

from bucketrt.errors import BucketrtError
from bucketrt.export_format.tasks import Task

from .family import Family, family_for, family_named
from .overrides import apply_overrides
from .presets import presets

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _preset_hint() -> str:
    return f"pass a local folder or a preset ({', '.join(presets())})"


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or text.endswith(("/", os.sep))
        or text.count("/") > 1
        or os.sep != "/"
        and os.sep in text
        or not _HUB_ID.match(text)
    )


def resolve_source(model: str) -> Source:
    """Decides what MODEL names; raises BucketrtError for a missing folder."""
    if model in presets():
        return PresetSource(model)
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BucketrtError(
                f"'{model}' is a file, not a model folder", "pass the folder written by save_pretrained"
            )
        return FolderSource(str(path.resolve()))
    if _looks_like_path(model):
        raise BucketrtError(
            f"model folder '{model}' does not exist", f"check the path, or use a preset ({', '.join(presets())})"
        )
    return HubSource(model)


@contextlib.contextmanager
def quiet_transformers():
    """Keeps transformers' and the hub's warnings (new heads, retries) out of the output."""
    import huggingface_hub.utils as hub_utils
    import transformers

    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars on stderr
    hub_bars = not hub_utils.are_progress_bars_disabled()
    hub_utils.disable_progress_bars()
    hub_logger = hub_utils.logging.get_logger("huggingface_hub")
    hub_level = hub_logger.level
    hub_logger.setLevel("ERROR")
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)
        if bars:
            transformers.logging.enable_progress_bar()
        if hub_bars:
            hub_utils.enable_progress_bars()
        hub_logger.setLevel(hub_level)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so that offline runs fail at once instead of retrying."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True  # a proxy decides; let the hub client try
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_error(model_id: str, error: Exception) -> BucketrtError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
        if len(chain) > 10:
            break
    if any(isinstance(e, GatedRepoError) for e in chain):
        return BucketrtError(
            f"hub model '{model_id}' is gated", "log in with `hf auth login` or download it to a folder"
        )
    if any(isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)) for e in chain):
        return BucketrtError(f"no model '{model_id}' on the hub (or it is private)", _preset_hint())
    detail = " ".join(str(error).split())[:200]
    return BucketrtError(f"cannot load hub model '{model_id}' ({detail})", _preset_hint())


def _folder_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BucketrtError(f"no config.json in '{folder}'", "pass a folder written by save_pretrained, or a preset")
    try:
        data = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise BucketrtError(f"cannot read {config_file} ({e})") from None
    if not isinstance(data, dict):
        raise BucketrtError(f"{config_file} is not a JSON object")
    return data


# Files a tokenizer's save_pretrained may write; a folder with none of them has no tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "added_tokens.json",
)


@dataclass(frozen=True)
class Source:
    """A model's origin: the config, the weights and the tokenizer come from it."""

    ref: str  # preset name, absolute folder path, or hub id
    kind: ClassVar[str]  # the manifest's "source_kind"
    noun: ClassVar[str]  # how messages name it
    revision: ClassVar[str | None] = None  # the hub commit (HubSource's field), recorded in the manifest

    def describe(self) -> str:
        return f"{self.noun} {self.ref}"

    def load_config(self, overrides: dict | None = None) -> tuple[Family, object, Source]:
        """The model's family and config, with overrides applied and validated for export; and the
        source, which for hub ids gains the resolved revision."""
        family, config, source = self._config()
        config = apply_overrides(config, overrides or {})
        family.check_config(config)  # raises for what we cannot export
        return family, config, source

    def build_model(self, family: Family, config, task: Task, seed: int):
        """The task's model in eval mode, fp32. Random weights (presets, new heads) come from `seed`."""
        with quiet_transformers(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._model(family, config, task)
        return model.to(torch.float32).eval()

    def save_tokenizer(self, output_dir: Path) -> tuple[list[str], str | None]:
        """Copies the source's tokenizer into the export (AutoTokenizer, then save_pretrained).

        Returns the files written and, when none were, why (a preset has no tokenizer; a folder or
        hub model without one, or whose tokenizer does not load)."""
        raise NotImplementedError

    def _config(self) -> tuple[Family, object, Source]:
        raise NotImplementedError

    def _model(self, family: Family, config, task: Task):
        raise NotImplementedError

    @staticmethod
    def from_manifest(manifest: dict) -> Source:
        """The source an export recorded (exports without "source_kind" are of presets)."""
        kind = {cls.kind: cls for cls in (PresetSource, FolderSource, HubSource)}[manifest.get("source_kind", "preset")]
        return kind(manifest["source"], manifest.get("revision")) if kind is HubSource else kind(manifest["source"])


@dataclass(frozen=True)
class PresetSource(Source):
    kind = "preset"
    noun = "preset"

    def _config(self):
        preset = presets()[self.ref]
        family = family_named(preset.family)
        return family, family.make_config(preset.config), self

    def _model(self, family, config, task):
        return family.build_model(task, config, None)

    def save_tokenizer(self, output_dir):
        return [], f"preset {self.ref} has no tokenizer"


class _Saved(Source):
    """A model saved with save_pretrained: in a folder or on the hub."""

    def _weights(self) -> dict:
        """from_pretrained's arguments for the weights."""
        raise NotImplementedError

    def _model(self, family, config, task):
        try:
            return family.build_model(task, config, self.ref, dtype=torch.float32, **self._weights())
        except BucketrtError:
            raise
        except Exception as e:
            detail = " ".join(str(e).split())[:300]
            raise BucketrtError(
                f"cannot load the weights of {self.describe()} as {task.model_class} ({detail})",
                "check the folder and any --config-override that changes layer sizes",
            ) from None

    def _tokenizer(self, output_dir: Path, **kwargs) -> tuple[list[str], str | None]:
        from transformers import AutoTokenizer

        with quiet_transformers():
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.ref, **kwargs)
            except Exception as e:  # no tokenizer, or one this transformers cannot load: the export stays usable
                return [], f"{self.describe()}: no tokenizer loaded ({' '.join(str(e).split())[:160]})"
            written = tokenizer.save_pretrained(str(output_dir))
        return sorted({Path(p).name for p in written if Path(p).is_file()}), None


@dataclass(frozen=True)
class FolderSource(_Saved):
    kind = "folder"
    noun = "folder"

    def _config(self):
        folder = Path(self.ref)
        if not folder.is_dir():
            raise BucketrtError(
                f"model folder '{folder}' does not exist", "it was moved or deleted since the export; export again"
            )
        family = family_for(_folder_config(folder))
        with quiet_transformers():
            try:
                config = family.load_config(str(folder))
            except BucketrtError:
                raise
            except Exception as e:
                raise BucketrtError(
                    f"cannot read the config in '{folder}' ({' '.join(str(e).split())[:200]})"
                ) from None
        return family, config, self

    def _weights(self):
        return {"revision": None, "local_files_only": True}

    def save_tokenizer(self, output_dir):
        if not any((Path(self.ref) / name).is_file() for name in TOKENIZER_FILES):
            return [], f"folder {self.ref} has no tokenizer files"
        return self._tokenizer(output_dir, local_files_only=True)


@dataclass(frozen=True)
class HubSource(_Saved):
    kind = "hub"
    noun = "hub model"
    revision: str | None = None  # the commit, once resolved (or as recorded)
    local_only: bool = False  # serve from the local cache (the hub is unreachable)

    def _local_only(self) -> bool:
        return self.local_only or not _hub_reachable()

    def _config(self):
        local_only = self._local_only()
        with quiet_transformers():
            try:
                from huggingface_hub import hf_hub_download

                config_file = hf_hub_download(
                    self.ref, "config.json", revision=self.revision, local_files_only=local_only
                )
                family = family_for(json.loads(Path(config_file).read_text()))
                config = family.load_config(self.ref, revision=self.revision, local_files_only=local_only)
            except BucketrtError:
                raise
            except Exception as e:
                if local_only:
                    raise BucketrtError(f"cannot reach the hub for '{self.ref}'", _preset_hint()) from None
                raise _hub_error(self.ref, e) from None
        return family, config, replace(self, revision=self.revision or getattr(config, "_commit_hash", None))

    def _weights(self):
        return {"revision": self.revision, "local_files_only": self.local_only}

    def save_tokenizer(self, output_dir):
        kwargs = {"revision": self.revision}
        if self._local_only():
            kwargs["local_files_only"] = True
        return self._tokenizer(output_dir, **kwargs)
