"""TensorRT optimisation profiles: trtexec's shape syntax, and the ranges an export's dims take.

A profile gives every input of an engine a (min, opt, max) shape. `bucketrt build` takes them as
trtexec does (`--minShapes=input_ids:1x128,attention_mask:1x128`) and fills in what is not given:

* for an input named in some of min/opt/max but not all, as trtexec does: opt defaults to max (or
  else min), min and max default to opt;
* for an input not named at all, each dim takes the range that a named input with the same dim
  name (batch_size, sequence_length, ...) was given, else the default range of a dim of that
  name (`default_dim_ranges`), else it must be given.

Everything here is plain Python (no TensorRT), so that it is tested everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bucketrt.errors import BucketrtError, ProfileError
from bucketrt.export_format.manifest import max_sequence_length
from bucketrt.export_format.tasks import (
    BATCH,
    BUFFER_SEQUENCE,
    CACHED_SEQUENCE,
    CHOICES,
    DECODER_SEQUENCE,
    ENCODER_SEQUENCE,
    PAST_SEQUENCE,
    SEQUENCE,
    TOTAL_SEQUENCE,
    WINDOW_CACHED_SEQUENCE,
)

Shape = tuple[int, ...]
SELECTORS = ("min", "opt", "max")

# Default ranges for engines built without shapes (`bucketrt build --max-shapes` overrides them).
DEFAULT_MAX_BATCH, DEFAULT_MAX_CHOICES = 8, 4
DEFAULT_OPT_SEQUENCE = 128
DEFAULT_MAX_SEQUENCE = 512  # models without a position limit (Switch's relative positions)


def default_dim_ranges(manifest: dict) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of each dynamic dim, by its name (export_format.tasks): batch 1/1/8, choices
    1/2/4, token axes 1/min(128, limit)/limit, where the limit is the export's max_sequence_length
    (DEFAULT_MAX_SEQUENCE for models without one). A seq2seq decoder without past starts from one
    token, so its opt is 1.

    A causal LM's step with a cache takes new tokens, cached ones and a mask over both, and TensorRT
    evaluates the graph's shapes at each corner of the profile, so the corners must add up: the
    cache is empty at min and opt (a prompt: 1 and 128 new tokens, masks of 1 and 128) and full at
    max (limit new after limit cached, a mask of 2 x limit: wider than any call the runtime makes).
    A sliding-window layer's cache takes the same range: its past may be any suffix of the history.
    A shared key/value buffer holds at least the mask's tokens: the mask's range."""
    limit = max_sequence_length(manifest) or DEFAULT_MAX_SEQUENCE
    opt = min(DEFAULT_OPT_SEQUENCE, limit)
    tokens = (1, opt, limit)
    return {
        BATCH: (1, 1, DEFAULT_MAX_BATCH),
        CHOICES: (1, 2, DEFAULT_MAX_CHOICES),
        SEQUENCE: tokens,
        ENCODER_SEQUENCE: tokens,
        DECODER_SEQUENCE: (1, 1, limit),
        PAST_SEQUENCE: tokens,
        CACHED_SEQUENCE: (0, 0, limit),
        WINDOW_CACHED_SEQUENCE: (0, 0, limit),
        TOTAL_SEQUENCE: (1, opt, 2 * limit),
        BUFFER_SEQUENCE: (1, opt, 2 * limit),
    }


@dataclass(frozen=True)
class ShapeRange:
    min: Shape
    opt: Shape
    max: Shape

    def __iter__(self):
        yield from (self.min, self.opt, self.max)

    def covers(self, shape: Iterable[int]) -> bool:
        shape = tuple(shape)
        return len(shape) == len(self.min) and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def to_json(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, value: Mapping) -> ShapeRange:
        return cls(*(tuple(int(d) for d in value[key]) for key in SELECTORS))


def format_shape(shape: Iterable[int]) -> str:
    return "x".join(str(d) for d in shape)


def format_shapes(shapes: Mapping[str, Iterable[int]]) -> str:
    """The inverse of `parse_shapes` (names holding ':' or ',' are quoted)."""
    return ",".join(f"{_quote(name)}:{format_shape(shape)}" for name, shape in shapes.items())


def _quote(name: str) -> str:
    return f"'{name}'" if any(c in name for c in ":,'") else name


def parse_shapes(text: str, option: str = "--shapes") -> dict[str, Shape]:
    """Parses trtexec's shape list: `name:DxDx...` entries separated by commas.

    `input_ids:1x128,attention_mask:1x128` -> {"input_ids": (1, 128), "attention_mask": (1, 128)}.
    As in trtexec, a name may be wrapped in single quotes to hold ':' or ',' ('input:0':1x3); an
    unquoted name runs to the last ':' of its entry. Dims are integers >= 0 (a zero-sized dim is a
    valid TensorRT shape). Raises ProfileError, naming `option`, for anything else.
    """
    shapes: dict[str, Shape] = {}
    for entry in _split_entries(text, option):
        if entry.startswith("'"):
            end = entry.find("'", 1)
            if end < 0:
                raise ProfileError(f"{option}: unterminated quote in '{entry}'")
            name, rest = entry[1:end], entry[end + 1 :]
            if not rest.startswith(":"):
                raise ProfileError(f"{option}: expected ':' after the quoted name in '{entry}'")
            dims = rest[1:]
        else:
            name, sep, dims = entry.rpartition(":")
            if not sep:
                raise ProfileError(f"{option}: '{entry}' is not NAME:DIMS (e.g. input_ids:1x128)")
        if not name:
            raise ProfileError(f"{option}: '{entry}' has no input name")
        if name in shapes:
            raise ProfileError(f"{option}: input '{name}' is given twice")
        shapes[name] = _parse_dims(dims, name, option)
    return shapes


def _split_entries(text: str, option: str) -> list[str]:
    entries, current, quoted = [], [], False
    for char in text.strip():
        if char == "'":
            quoted = not quoted
        if char == "," and not quoted:
            entries.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    entries.append("".join(current).strip())
    if not any(entries):
        raise ProfileError(f"{option}: no shapes given")
    if not all(entries):
        raise ProfileError(f"{option}: empty entry in '{text}'")
    return entries


def _parse_dims(text: str, name: str, option: str) -> Shape:
    parts = text.strip().split("x")
    if not text.strip() or not all(p.strip().isdigit() for p in parts):
        raise ProfileError(f"{option}: '{name}:{text}' needs dims like 1x128 (integers >= 0 joined by 'x')")
    return tuple(int(p) for p in parts)


def resolve_profile(
    inputs: list[dict],
    given: Mapping[str, Mapping[str, Shape]],
    defaults: Mapping[str, tuple[int, int, int]],
    component: str = "model",
) -> dict[str, ShapeRange]:
    """The (min, opt, max) shape of every input of a component.

    `inputs` are the component's manifest entries ({"name", "dtype", "shape"}; a shape holds ints
    for fixed dims and names for dynamic ones). `given` maps "min"/"opt"/"max" to parsed shape
    options; names that are not inputs of this component are ignored (the caller checks that
    each names an input of some component). `defaults` maps dim names to their default range.
    """
    by_name = {spec["name"]: spec for spec in inputs}
    named = [n for n in by_name if any(n in given.get(s, {}) for s in SELECTORS)]

    ranges: dict[str, ShapeRange] = {}
    bound: dict[str, tuple[tuple[int, int, int], str]] = {}  # dim name -> (range, the input that set it)
    for name in named:
        dims = by_name[name]["shape"]
        for selector in SELECTORS:
            shape = given.get(selector, {}).get(name)
            if shape is not None and len(shape) != len(dims):
                raise ProfileError(
                    f"--{selector}-shapes: input '{name}' of {component} has rank {len(dims)} "
                    f"[{', '.join(map(str, dims))}], got {format_shape(shape)}"
                )
        # trtexec's rule: opt falls back to max, then min; min and max fall back to opt.
        opt = given.get("opt", {}).get(name) or given.get("max", {}).get(name) or given.get("min", {}).get(name)
        low = given.get("min", {}).get(name) or opt
        high = given.get("max", {}).get(name) or opt
        for axis, dim in enumerate(dims):
            triple = (low[axis], opt[axis], high[axis])
            if isinstance(dim, int):
                if triple != (dim, dim, dim):
                    raise ProfileError(
                        f"input '{name}' of {component}: dim {axis} is fixed at {dim} in the model, "
                        f"the shapes give {'/'.join(map(str, triple))} (min/opt/max)"
                    )
            elif isinstance(dim, str):
                if dim in bound and bound[dim][0] != triple:
                    other, by = bound[dim]
                    raise ProfileError(
                        f"inputs '{by}' and '{name}' of {component} share dim '{dim}' but are given "
                        f"{'/'.join(map(str, other))} and {'/'.join(map(str, triple))} (min/opt/max)"
                    )
                bound.setdefault(dim, (triple, name))
        ranges[name] = ShapeRange(tuple(low), tuple(opt), tuple(high))

    for name, spec in by_name.items():
        if name in ranges:
            continue
        triples = []
        for axis, dim in enumerate(spec["shape"]):
            if isinstance(dim, int):
                triples.append((dim, dim, dim))
            elif isinstance(dim, str) and dim in bound:
                triples.append(bound[dim][0])
            elif isinstance(dim, str) and dim in defaults:
                triples.append(tuple(defaults[dim]))
            else:
                raise ProfileError(
                    f"input '{name}' of {component}: dim {axis} ({dim if dim is not None else 'unnamed'}) has "
                    "no default range; give the input's shapes with --min-shapes/--opt-shapes/--max-shapes"
                )
        ranges[name] = ShapeRange(*(tuple(t[i] for t in triples) for i in range(3)))

    for name, r in ranges.items():
        for axis, (low, opt, high) in enumerate(zip(r.min, r.opt, r.max)):
            if not low <= opt <= high:
                raise ProfileError(
                    f"input '{name}' of {component}: dim {axis} needs min <= opt <= max, got {low}/{opt}/{high}"
                )
    return {name: ranges[name] for name in by_name}


def widen_to(profile: Mapping[str, ShapeRange], shapes: Mapping[str, Iterable[int]]) -> dict[str, ShapeRange]:
    """`profile` with opt set to `shapes` and min/max widened to include them (a check's inputs)."""
    out = {}
    for name, r in profile.items():
        if name not in shapes:
            out[name] = r
            continue
        shape = tuple(shapes[name])
        out[name] = ShapeRange(
            tuple(min(a, b) for a, b in zip(r.min, shape)), shape, tuple(max(a, b) for a, b in zip(r.max, shape))
        )
    return out


# A token's activations alive at once inside a layer, in hidden widths: the residual stream, the
# normalised layer input, the attention's output and the tensor being written; plus one
# feed-forward intermediate. A floor, not TensorRT's exact plan: what an engine of these max shapes
# cannot do without.
LIVE_HIDDEN_ACTIVATIONS = 4
_HIDDEN_KEYS = ("hidden_size", "d_model")
_FEED_FORWARD_KEYS = ("intermediate_size", "feed_forward_size", "d_ff")


@dataclass(frozen=True)
class MemoryEstimate:
    """Activation memory of a profile's max shapes: `tokens` (B·N of the largest token input) rows
    of `hidden` and `feed_forward` elements of `element_bytes`."""

    tokens: int
    hidden: int
    feed_forward: int
    element_bytes: int

    @property
    def activation_bytes(self) -> int:
        """One [B·N, hidden] activation."""
        return self.tokens * self.hidden * self.element_bytes

    @property
    def total_bytes(self) -> int:
        return self.tokens * self.element_bytes * (LIVE_HIDDEN_ACTIVATIONS * self.hidden + self.feed_forward)

    def describe(self) -> str:
        dtype = "float16" if self.element_bytes == 2 else "float32"
        return (
            f"about {_gib(self.total_bytes)} of activations at its max shapes ({self.tokens:,} positions; "
            f"each [B·N, {self.hidden}] {dtype} activation is {_gib(self.activation_bytes)})"
        )


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{size / (1 << 20):.0f} MiB"


def memory_estimate(manifest: dict, inputs: list[dict], profile: Mapping[str, ShapeRange]) -> MemoryEstimate | None:
    """The activation floor of `profile` (a component's), or None where the export's config has no
    hidden width. Positions: the largest B·N over the component's [B, N] integer inputs (ids, masks)."""
    config = manifest.get("config", {})
    hidden = next((int(config[k]) for k in _HIDDEN_KEYS if config.get(k)), 0)
    if hidden <= 0:
        return None
    feed_forward = next((int(config[k]) for k in _FEED_FORWARD_KEYS if config.get(k)), 4 * hidden)
    dtypes = {spec["name"]: str(spec.get("dtype", "")) for spec in inputs}
    tokens = max(
        (
            r.max[0] * r.max[1]
            for name, r in profile.items()
            if len(r.max) == 2 and dtypes.get(name, "").startswith("int")
        ),
        default=0,
    )
    element_bytes = 2 if manifest.get("dtype") == "fp16" else 4
    return MemoryEstimate(tokens, hidden, feed_forward, element_bytes)


def device_memory() -> int | None:
    """The current CUDA device's memory in bytes (through torch), or None where there is no GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    except Exception:  # a broken CUDA setup: no budget rather than no build
        return None


def component_profiles(
    manifest: dict,
    entries: list[dict],
    given: Mapping,
    memory_budget: int | None = None,
    budget_source: str = "the device's memory",
) -> dict[str, dict[str, ShapeRange]]:
    """{component name: {input: ShapeRange}} for an export's `entries`; BucketrtError for shapes
    that do not fit.

    `given` maps "min"/"opt"/"max" to parsed shape options (None or {} when not given). Each shape
    applies to every component with an input of that name; a name no component has is an error.
    Dims no shape names take their default ranges (`default_dim_ranges`).

    With `memory_budget` (bytes: --workspace, or the device's memory, named by `budget_source`),
    the default ranges' maxima are halved, batch first, down to their opt, until each component's
    activation floor (`memory_estimate`) fits; a profile that still does not fit (given shapes too
    large, or a model too wide) is a BucketrtError before anything is built.
    """
    given = {selector: dict(shapes or {}) for selector, shapes in given.items()}
    known = {spec["name"] for entry in entries for spec in entry["inputs"]}
    for selector, shapes in given.items():
        unknown = [name for name in shapes if name not in known]
        if unknown:
            raise BucketrtError(
                f"--{selector}-shapes names no input of the export: {', '.join(unknown)}",
                f"its inputs are {', '.join(sorted(known))}",
            )
    defaults = default_dim_ranges(manifest)
    # Batch dims shrink first, then the others (sequences), each halved down to its opt.
    order = sorted(defaults, key=lambda dim: (0 if "batch" in dim else 1, dim))

    def resolve() -> dict[str, dict[str, ShapeRange]]:
        try:
            return {e["name"]: resolve_profile(e["inputs"], given, defaults, e["name"]) for e in entries}
        except ProfileError as e:
            raise BucketrtError(str(e)) from None

    profiles = resolve()
    if memory_budget is None:
        return profiles
    for entry in entries:
        while True:
            estimate = memory_estimate(manifest, entry["inputs"], profiles[entry["name"]])
            if estimate is None or estimate.total_bytes <= memory_budget:
                break
            used = {d for spec in entry["inputs"] for d in spec["shape"] if isinstance(d, str)}
            shrinkable = [d for d in order if d in used and defaults[d][2] > max(defaults[d][1], 1)]
            if not shrinkable:
                raise BucketrtError(
                    f"the optimisation profile of {entry['name']} ({describe_profile(profiles[entry['name']])}) needs "
                    f"{estimate.describe()}, more than the {_gib(memory_budget)} of {budget_source}",
                    "give smaller --max-shapes (or a larger --workspace)",
                )
            dim = shrinkable[0]
            low, opt, high = defaults[dim]
            defaults[dim] = (low, opt, max(opt, 1, high // 2))
            profiles = resolve()
    return profiles


def describe_profile(profile: Mapping[str, ShapeRange]) -> str:
    """One line: each input's min…max (opt), or its one shape."""
    return ", ".join(
        f"{name} {format_shape(r.min)}…{format_shape(r.max)} (opt {format_shape(r.opt)})"
        if r.min != r.max
        else f"{name} {format_shape(r.opt)}"
        for name, r in profile.items()
    )


__all__ = [
    "ProfileError",
    "SELECTORS",
    "ShapeRange",
    "component_profiles",
    "default_dim_ranges",
    "describe_profile",
    "device_memory",
    "memory_estimate",
    "MemoryEstimate",
    "format_shape",
    "format_shapes",
    "parse_shapes",
    "resolve_profile",
    "widen_to",
]
