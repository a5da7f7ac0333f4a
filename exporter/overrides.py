"""KEY=VALUE: the one parser of `--config-override` and `--option` (and of export()'s
`config_overrides` and `options`); and the config overrides' application to a model's config."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from bucketrt.errors import BucketrtError

# Keys that describe where a config came from rather than the model; changing them is meaningless.
_FIXED = {"model_type", "transformers_version", "_name_or_path"}
_EXTRA = {"num_labels"}  # a property of every config, stored as id2label


def parse_key_values(given, argument: str, what: str, example: str) -> dict:
    """None -> {}; a dict as is; "KEY=VALUE" or several -> {KEY: VALUE}, later keys winning:
    ["use_expectation=false", "num_hash=8"] -> {"use_expectation": False, "num_hash": 8}.

    Values are JSON (true, 3, 0.5, null, [1, 2], "text"); a value that is not JSON is taken as a
    string, so hidden_act=gelu_new works without quotes. `argument` (the Python parameter), `what`
    (the command-line option) and `example` word the errors.
    """
    if given is None:
        return {}
    if isinstance(given, Mapping):
        return dict(given)
    if isinstance(given, str):
        given = [given]
    elif not isinstance(given, Iterable):
        raise BucketrtError(f"{argument} must be a dict or KEY=VALUE strings, got {type(given).__name__}")
    out: dict = {}
    for item in given:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BucketrtError(f"bad {what} '{item}'", f"write KEY=VALUE, e.g. {example}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out


def apply_overrides(config, overrides: Mapping):
    """A new config of the same class with `overrides` applied; validates keys and types."""
    if not overrides:
        return config
    base = config.to_dict()
    known = (set(base) | _EXTRA) - _FIXED
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise BucketrtError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)} "
            f"in --config-override for model type '{config.model_type}'",
            "use a field of the model's config.json, e.g. num_hash, hash_code_len, use_expectation, conv_window",
        )
    fixed = sorted(set(overrides) & _FIXED)
    if fixed:
        raise BucketrtError(f"config key '{fixed[0]}' cannot be overridden")
    values = dict(overrides)
    if "num_labels" in values:
        num_labels = values.pop("num_labels")
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise BucketrtError(
                f"bad config override num_labels={num_labels!r}", "num_labels must be a positive integer"
            )
        base.pop("label2id", None)
        base["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
    try:
        return type(config).from_dict({**base, **values})
    except Exception as e:  # strict dataclass validation: a wrong type or value
        detail = " ".join(str(e).split())
        raise BucketrtError(
            f"bad config override ({detail})", 'JSON values: true/false, numbers, null, "strings"'
        ) from None
