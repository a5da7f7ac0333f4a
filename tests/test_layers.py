"""The package's layers: every module imports only from its own layer and those below
(pyproject.toml's import-linter contracts, which `make lint` checks too), and nothing inside the
package imports its front door (bucketrt/__init__.py), which re-exports names from every layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _layered_packages() -> set[str]:
    """The subpackages the layer contract names (pyproject.toml), e.g. {"cli", "exporter", ...}."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}


def test_nothing_inside_the_package_imports_its_front_door():
    # An editable install's finder also lists the checkout's root as a folder of bucketrt (the
    # subpackages in top-level folders), so grimp would see tests/ as bucketrt.tests: only the
    # layered subpackages count.
    packages = _layered_packages()
    graph = grimp.build_graph("bucketrt")
    importers = {m for m in graph.find_modules_that_directly_import("bucketrt") if m.split(".")[1] in packages}
    assert importers == set()
    assert {m.split(".")[1] for m in graph.find_children("bucketrt")} >= packages


def test_the_layer_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.skip("import-linter is not installed (pip install import-linter)")
    done = subprocess.run([lint_imports, str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_a_layer_importing_upwards_breaks_the_contract():
    """The contract can fail: the runtime importing the exporter (what main did before the layers)."""
    from importlinter.contracts.layers import LayersContract

    graph = grimp.build_graph("bucketrt")
    graph.add_import(
        importer="bucketrt.runtime.modeling", imported="bucketrt.exporter.family", line_number=1, line_contents=""
    )
    contract = LayersContract(
        name="layers",
        session_options={"root_packages": ["bucketrt"]},
        contract_options={"containers": ["bucketrt"], "layers": ["exporter", "runtime"]},
    )
    check = contract.check(graph, verbose=False)
    assert not check.kept
