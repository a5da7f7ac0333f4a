"""What the CLI lists before it imports a family: each family's name, order, preset names and
option flags, read from the source of the families package without running it.

A family module imports torch (and often transformers), which costs seconds; `bucketrt --help`,
`bucketrt export --help` and the flags of `bucketrt export` must not. So these facts, which the
family declares once as class attributes of its `@register` class (family.py), are read here with
`ast` instead: `name` and `order` as literals, the keys of `presets` (a dict display with string
keys; its values may be any expression) and `option_flags` (a literal dict). The registry
(`family.families()`, which imports the modules) has the same facts;
tests/test_exporter_registry.py checks that the two agree for every family.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ORDER = 100  # Family.order where a family does not set it
_FAMILIES_PACKAGE = f"{__package__}.families"


@dataclass(frozen=True)
class DeclaredFamily:
    name: str
    order: int
    presets: tuple[str, ...] = ()  # preset names, in declaration order
    option_flags: dict[str, str] = field(default_factory=dict)  # option -> its flag's help
    path: str = ""  # the file that declares it, for messages


def _register_decorated(node: ast.ClassDef) -> bool:
    return any(
        (isinstance(d, ast.Name) and d.id == "register") or (isinstance(d, ast.Attribute) and d.attr == "register")
        for d in node.decorator_list
    )


def _class_attributes(node: ast.ClassDef) -> dict[str, ast.expr]:
    out = {}
    for statement in node.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if isinstance(target, ast.Name):
            out[target.id] = value
    return out


# A top-level `@register` line: what the module declares starts there.
_REGISTER = re.compile(r"^@(?:\w+\.)*register\b", re.MULTILINE)


def _read(path: Path) -> list[DeclaredFamily]:
    """The families that `path` registers, from its source: the top-level statements from the
    first `@register` line on (parsing the modules' code above it would double the CLI's cost)."""
    text = path.read_text()
    start = _REGISTER.search(text)
    if start is None:
        return []
    found = []
    for node in ast.parse(text[start.start() :], str(path)).body:
        if not (isinstance(node, ast.ClassDef) and _register_decorated(node)):
            continue
        attributes = _class_attributes(node)
        where = f"{path}: class {node.name}"
        try:
            name = ast.literal_eval(attributes["name"])
            order = ast.literal_eval(attributes["order"]) if "order" in attributes else DEFAULT_ORDER
            presets = attributes.get("presets")
            if presets is not None and not isinstance(presets, ast.Dict):
                raise ValueError("presets must be a dict display {NAME: Preset(...), ...}")
            names = tuple(ast.literal_eval(key) for key in presets.keys) if presets is not None else ()
            flags = ast.literal_eval(attributes["option_flags"]) if "option_flags" in attributes else {}
        except (KeyError, ValueError, TypeError, SyntaxError) as e:
            raise ValueError(
                f"{where}: name, order, the keys of presets and option_flags must be literals ({e})"
            ) from None
        if not isinstance(name, str) or not isinstance(order, int) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: name and preset names must be strings, order an int")
        if not isinstance(flags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in flags.items()):
            raise ValueError(f"{where}: option_flags must map option names to help texts")
        found.append(DeclaredFamily(name, order, names, flags, str(path)))
    return found


@functools.cache
def declared_families() -> tuple[DeclaredFamily, ...]:
    """Every family of the families package, in `order` (then name), as its source declares it."""
    package = importlib.import_module(_FAMILIES_PACKAGE)  # its __init__ imports nothing
    found = []
    for module in pkgutil.iter_modules(package.__path__):
        spec = importlib.util.find_spec(f"{_FAMILIES_PACKAGE}.{module.name}")  # finds; runs nothing
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            found += _read(Path(spec.origin))
    return tuple(sorted(found, key=lambda f: (f.order, f.name)))


def preset_names() -> list[str]:
    """Every preset, family by family in `order`: what `bucketrt export --help` lists."""
    return [name for family in declared_families() for name in family.presets]


def option_flags() -> dict[str, str]:
    """{option: help} of the flags that families give their boolean options (`--mask-padding` for
    YOSO's mask_padding): each sets the option to true. A flag two families declare is one flag,
    with the first family's help."""
    flags: dict[str, str] = {}
    for family in declared_families():
        for option, text in family.option_flags.items():
            flags.setdefault(option, text)
    return flags
