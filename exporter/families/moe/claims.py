"""Which configs the family claims: the transformers model types whose causal LM declares its
experts with `@use_experts_implementation`, found from transformers' own classes (no list here).

A model type's classes come from transformers' auto mappings (by name, so that nothing is imported
to answer for a type transformers does not know); its modeling module is imported once to see
whether any of its classes uses the experts interface (bucketrt.exporter.experts.uses_interface).
"""

from __future__ import annotations

import functools
import importlib
import sys

from ...experts import interface_classes

# config.json fields that say a model has experts (for the error naming what is missing when its
# experts do not go through the interface), top level or one level down (DBRX's ffn_config).
_EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
# The heads, as transformers' auto mappings name them.
_MAPPINGS = {
    "text-generation": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "feature-extraction": "MODEL_MAPPING_NAMES",
    "text-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
}


def class_name(model_type: str, task: str) -> str | None:
    """transformers' class of a model type's head for `task` (None: the type has none)."""
    from transformers.models.auto import modeling_auto

    name = getattr(modeling_auto, _MAPPINGS[task]).get(model_type)
    return name if isinstance(name, str) else None


@functools.cache
def experts_classes(model_type: str) -> tuple[str, ...] | None:
    """Names of the classes of the model type's modeling module that use the experts interface;
    None when the type has no causal LM in this transformers."""
    causal = class_name(model_type, "text-generation")
    if causal is None:
        return None
    import transformers

    try:
        cls = getattr(transformers, causal)
    except (AttributeError, ImportError):
        return None
    module = sys.modules.get(cls.__module__) or importlib.import_module(cls.__module__)
    return tuple(c.__name__ for c in interface_classes(module))


def has_experts(config: dict) -> bool:
    """Whether a config.json says its model has experts (a positive expert count)."""
    for scope in (config, *(v for v in config.values() if isinstance(v, dict))):
        for name in _EXPERT_COUNT_FIELDS:
            value = scope.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return True
    return False


def claims(config: dict) -> bool:
    """The family's claim: a causal LM whose experts use the interface, or one whose config says it
    has experts (refused by `check_config` with what is missing)."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return False
    found = experts_classes(model_type)
    if found is None:
        return False
    return bool(found) or has_experts(config)
