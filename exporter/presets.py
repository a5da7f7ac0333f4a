"""Built-in model presets: architectures with random weights, for demos, tests and benchmarks.

A preset needs no download: its weights are drawn from the export seed, so the same seed always
gives the same model (and `load_reference` can rebuild it). Each family declares its own presets
(`Family.presets`, in its module of the families package); `PRESETS` gathers them, family by family.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    description: str
    # Arguments for the family's config class; everything not named keeps the class's default.
    config: dict = field(default_factory=dict)
    # Filled in by @register from the family's `presets` dict: the preset's and the family's names.
    name: str = ""
    family: str = ""


def presets() -> dict[str, Preset]:
    """{name: Preset} of every registered family, in family order; ValueError for a name that two
    families declare."""
    from .family import families

    out: dict[str, Preset] = {}
    for family in families():
        for name, preset in family.presets.items():
            if name in out:
                raise ValueError(f"preset '{name}' is declared by the {out[name].family} and {family.name} families")
            out[name] = preset
    return out


def __getattr__(name: str):
    # PRESETS imports the families (torch) on first use, not when this module is imported.
    if name == "PRESETS":
        value = globals()["PRESETS"] = presets()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
