"""plugins/README.md's "Places a new op touches" stays true.

The section lists the files a new op edits and states their count. `problems` checks it against
the repository both ways:

* every listed place holds every op of the catalogue (the CUDA places, those with `cuda` in their
  path: every op of the CUDA op table), each by a check of its own (`PLACE_CHECKS`): a place listed
  that no op needs, or one this test cannot check, is a problem;
* no file off the list lists the ops by hand: a file naming every op of the CUDA op table (by name,
  or by its kernels' file stem, as a CMake source list would) must be a place, generated
  (docs/ops.md; the op lists of `codegen.OP_LIST_FILES`, which must be current), or one of
  `NOT_PLACES`, each with why it is none;
* the stated counts (all places; those of a CPU-only op) are the list's.

`test_the_check_catches_a_wrong_statement` feeds it a README and files that are wrong on purpose.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from op_inputs import TABLE

from bucketrt.ops import codegen, lowering, lowering_costs, reference
from bucketrt.ops.catalogue import OPS

ROOT = Path(__file__).resolve().parents[1]
README = "plugins/README.md"
SECTION = "## Places a new op touches"
TEXT_SUFFIXES = {".py", ".cc", ".h", ".cu", ".cuh", ".md", ".txt", ".cmake", ".sh", ".toml", ".inc", ".map"}

# Files that name every op with a CUDA kernel without being a place a new op edits.
NOT_PLACES = {
    "docs/cuda.md": "the CUDA kernels' design notes, a section per kernel (its op list is generated)",
    "tests/kernel_cases.py": "the audits and non-finite cases the CPU and CUDA kernel tests share: op-specific test "
    "content, like the kernel tests (places 10 and 11), which an op without NaN/Inf semantics of its own skips",
    "tests/test_cuda_build.py": "per-op checks of the data reports' host side, for the ops that have one; a new op's "
    "data report is tested on the GPU in tests/test_kernels_cuda.py (a place)",
}


def _read(root: Path, name: str) -> str:
    return (root / name).read_text()


def _kernel_tests(root: Path) -> list[str]:
    """The Makefile's KERNEL_TESTS: the CPU kernel tests, which make test-simd and make sanitize run."""
    make = _read(root, "Makefile")
    block = re.search(r"^KERNEL_TESTS \?=(.*?)\n(?=\S)", make, re.M | re.S).group(1)
    return re.findall(r"tests/\w+\.py", block)


def _names(text: str, op: str) -> bool:
    return re.search(rf"\b{re.escape(op)}\b", text) is not None


def _place_checks(root: Path) -> dict[str, Callable[[str], bool]]:
    """Per place of the list (its path, `<op>` for the op's file stem): does op `name` hold it?"""
    cuda = {e.op for e in codegen.cuda_table(_read(root, codegen.CUDA_TABLE))}
    kernels_cc = _read(root, "plugins/ort/kernels.cc")
    cpu_tests = [_read(root, f) for f in _kernel_tests(root)]
    cuda_tests = _read(root, "tests/test_kernels_cuda.py")
    catalogue = _read(root, "src/bucketrt/ops/catalogue.py")

    def stem(name: str, folder: str, suffix: str) -> bool:
        return (root / folder / f"{codegen.file_stem(name)}{suffix}").is_file()

    return {
        "src/bucketrt/ops/catalogue.py": lambda name: f'name="{name}"' in catalogue,
        "src/bucketrt/ops/reference.py": lambda name: name in reference.REFERENCES,
        "plugins/cpu/<op>.h": lambda name: stem(name, "plugins/cpu", ".h"),
        "plugins/cpu/<op>.cc": lambda name: stem(name, "plugins/cpu", ".cc"),
        "plugins/ort/kernels.cc": lambda name: f"void {name}Kernel::Compute(" in kernels_cc,
        "plugins/cuda/<op>.h": lambda name: stem(name, "plugins/cuda", ".h"),
        "plugins/cuda/<op>.cu": lambda name: stem(name, "plugins/cuda", ".cu"),
        "plugins/cuda/ops.cc": lambda name: name in cuda,
        "tests/op_inputs.py": lambda name: name in TABLE and bool(TABLE[name].small) and bool(TABLE[name].workers),
        "tests/test_kernels_cpu.py": lambda name: any(_names(text, name) for text in cpu_tests),
        "tests/test_kernels_cuda.py": lambda name: f'"{name}"' in cuda_tests,
        # A lowering, or a reason for none (`lowers` refuses an op that has both); its costs stated.
        "src/bucketrt/ops/lowering.py": lambda name: name in lowering.LOWERINGS or name in lowering_costs.NOT_LOWERED,
        "src/bucketrt/ops/lowering_costs.py": lambda name: bool(
            lowering_costs.COSTS.get(name) if name in lowering.LOWERINGS else lowering_costs.NOT_LOWERED.get(name)
        ),
    }


def places(readme: str) -> tuple[list[tuple[int, str]], list[int]]:
    """The section's numbered places (number, first `path`) and the counts its text states."""
    section = readme[readme.index(SECTION) + len(SECTION) :]
    section = section[: section.index("\n## ")]
    items = [(int(n), path) for n, path in re.findall(r"^(\d+)\. `([^`]+)`", section, re.M)]
    counts = [int(n) for n in re.findall(r"\b(\d+) places\b", section)]
    return items, counts


def _files(root: Path) -> list[str]:
    """The repository's files (git's tracked and untracked ones it does not ignore)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        names = out.split()
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".cache", ".triton", "build", "out", ".device"}
        names = [
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(root).parts)
        ]
    return sorted(n for n in names if Path(n).suffix in TEXT_SUFFIXES or Path(n).name in ("Makefile",))


def _generated(name: str, text: str) -> bool:
    return name == "docs/ops.md" and text.startswith(codegen.markdown().split("\n", 3)[0])


def problems(root: Path, readme: str | None = None, extra_files: dict[str, str] | None = None) -> list[str]:
    """What is wrong with the README's list of places against the repository at `root` (the README
    and further files may be given instead of read)."""
    readme = _read(root, README) if readme is None else readme
    found: list[str] = []
    items, counts = places(readme)
    cuda = [e.op for e in codegen.cuda_table(_read(root, codegen.CUDA_TABLE))]
    # The list and its counts.
    if [n for n, _ in items] != list(range(1, len(items) + 1)):
        found.append(f"the places are not numbered 1..{len(items)}: {[n for n, _ in items]}")
    cuda_only = [n for n, path in items if "cuda" in path]
    if len(counts) < 2 or counts[0] != len(items) or counts[1] != len(items) - len(cuda_only):
        found.append(
            f"the section states {counts} places; the list has {len(items)}, {len(items) - len(cuda_only)} "
            "without the CUDA ones"
        )
    # Every place holds every op it applies to.
    checks = _place_checks(root)
    listed = {path for _, path in items}
    for path in sorted(listed - set(checks)):
        found.append(f"place `{path}`: this test has no check for it (add one to _place_checks)")
    for path in sorted(set(checks) - listed):
        found.append(f"`{path}` is checked as a place but not on the list")
    for _, path in items:
        if path not in checks:
            continue
        ops = cuda if "cuda" in path else [op.name for op in OPS]
        missing = [name for name in ops if not checks[path](name)]
        if missing:
            found.append(f"place `{path}`: not held by {missing}, though the list says every op edits it")
    # No hand list off the list.
    files = {name: None for name in _files(root)}
    files.update(extra_files or {})
    lists = codegen.op_lists(codegen.cuda_table(_read(root, codegen.CUDA_TABLE)))
    on_list = {path.replace("<op>", stem) for path in listed for stem in [codegen.file_stem(n) for n in cuda]}
    on_list |= listed | set(_kernel_tests(root))
    for name, text in files.items():
        text = _read(root, name) if text is None else text
        if name in codegen.OP_LIST_FILES:
            if codegen.fill_op_lists(text, lists) != text:
                found.append(f"{name}: its op lists are not current (run `make docs`)")
            text = re.sub(r"<!-- op-list:[\w-]+ -->.*?<!-- /op-list -->", "", text, flags=re.S)
        if name in on_list or name in NOT_PLACES or _generated(name, text):
            continue
        if all(_names(text, op) or codegen.file_stem(op) in text for op in cuda):
            found.append(
                f"{name} names every op with a CUDA kernel: a place not on the list, or an op list to generate"
            )
    return found


def test_the_places_statement_holds():
    assert problems(ROOT) == []


def test_the_check_catches_a_wrong_statement():
    readme = _read(ROOT, README)
    items, _ = places(readme)
    assert len(items) == 13
    # A place dropped from the list (and the counts left as they were).
    without_ops_cc = re.sub(r"^8\. `plugins/cuda/ops.cc`.*\n", "", readme, flags=re.M)
    found = problems(ROOT, readme=without_ops_cc)
    assert "`plugins/cuda/ops.cc` is checked as a place but not on the list" in found, found
    assert any(p.startswith("the places are not numbered") for p in found), found
    assert (
        "plugins/cuda/ops.cc names every op with a CUDA kernel: a place not on the list, or an op list to generate"
        in (found)
    ), found
    # A new hand list of the ops, and a stale generated one.
    listing = "\n".join(f"    {op!r}: make_{codegen.file_stem(op)}," for op in (e.op for e in _cuda_table()))
    stale = _read(ROOT, "docs/cuda.md").replace("<!-- op-list:cpu-only-ops -->", "<!-- op-list:cpu-only-ops -->X, ", 1)
    found = problems(
        ROOT, extra_files={"tests/new_suite.py": "MAKERS = {\n" + listing + "\n}\n", "docs/cuda.md": stale}
    )
    assert found == [
        "docs/cuda.md: its op lists are not current (run `make docs`)",
        "tests/new_suite.py names every op with a CUDA kernel: a place not on the list, or an op list to generate",
    ], found
    # A place that not every op holds, and one this test cannot check.
    extra = readme.replace(
        "13. `src/bucketrt/ops/lowering_costs.py`",
        "13. `src/bucketrt/ops/lowering_costs.py`: x\n14. `tests/elsewhere.py`",
    )
    found = problems(ROOT, readme=extra.replace("`plugins/cpu/<op>.h`", "`plugins/cuda/<op>.h`", 1))
    assert "place `tests/elsewhere.py`: this test has no check for it (add one to _place_checks)" in found, found
    assert any(p.startswith("the section states [13, 9] places; the list has 14") for p in found), found


def _cuda_table():
    return codegen.cuda_table(_read(ROOT, codegen.CUDA_TABLE))
