"""The native glue generated from the spec (op_specs.h): per op its input and output index enums and
a typed dims struct, and the op table (BUCKETRT_FOR_EACH_OP) that registers every op's CPU and CUDA
kernels. Checked by compiling against the generated header: indices in spec order, every symbolic
dim a member read from the bindings, and a dim renamed in the spec a compile error in the kernel
that reads it (rather than an unbound look-up, -1, at run time)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bucketrt.ops import catalogue, codegen

ROOT = Path(__file__).resolve().parents[1]


def _compiler() -> str:
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    return compiler


def _write_header(folder: Path, header: str) -> Path:
    (folder / "bucketrt").mkdir(parents=True, exist_ok=True)
    (folder / "bucketrt" / "op_specs.h").write_text(header)
    return folder


def _compile(source: Path, generated: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            _compiler(),
            "-std=c++17",
            "-Wall",
            "-Werror",
            f"-I{generated}",
            f"-I{ROOT / 'plugins' / 'include'}",
            f"-I{ROOT / 'plugins'}",
            *extra,
            str(source),
        ],
        capture_output=True,
        text=True,
    )


def test_generated_indices_dims_and_op_table(tmp_path):
    generated = _write_header(tmp_path, codegen.cpp_header())
    checks = []
    for op in catalogue.OPS:
        for kind, tensors in (("Input", op.inputs), ("Output", op.outputs)):
            for index, t in enumerate(tensors):
                name = "k" + "".join(p[:1].upper() + p[1:] for p in t.name.split("_"))
                checks.append(f'static_assert(spec::{op.name}::{name} == {index}, "{op.name} {t.name}");')
                checks.append(
                    f"static_assert(std::is_same_v<decltype(spec::{op.name}::{name}), const spec::{op.name}::{kind}> "
                    f'|| std::is_same_v<decltype(spec::{op.name}::{name}), spec::{op.name}::{kind}>, "");'
                )
        symbols = list(dict.fromkeys(d for t in (*op.inputs, *op.outputs) for d in t.dims if d.isidentifier()))
        # Each member comes from its own symbol: bind symbol i to 100 + i, read the struct back.
        binds = " ".join(f'{{"{d}", {100 + i}}},' for i, d in enumerate(symbols))
        reads = " && ".join(f"d.{d} == {100 + i}" for i, d in enumerate(symbols))
        checks.append(
            f"{{ const FakeEnv env{{{{{binds}}}}}; const auto d = spec::{op.name}::Dims::From(env); "
            f"if (!({reads})) return 1; }}"
        )
    table = f'#define COUNT(Op) +1\nstatic_assert(0 BUCKETRT_FOR_EACH_OP(COUNT) == {len(catalogue.OPS)}, "one entry per op");'
    names = "#define NAME(Op) #Op,\nconst char* kNames[] = {BUCKETRT_FOR_EACH_OP(NAME)};"
    source = tmp_path / "glue_check.cc"
    source.write_text(
        "\n".join(
            [
                "#include <cstring>",
                "#include <map>",
                "#include <string>",
                "#include <type_traits>",
                '#include "bucketrt/op_specs.h"',
                "using namespace bucketrt;",
                "struct FakeEnv { std::map<std::string, int64_t> v; int64_t operator[](const char* s) const { "
                "auto it = v.find(s); return it == v.end() ? -1 : it->second; } };",
                table,
                names,
                "int main() {",
                *checks,
                *(f'  if (std::strcmp(kNames[{i}], "{op.name}") != 0) return 2;' for i, op in enumerate(catalogue.OPS)),
                "  return 0;",
                "}",
            ]
        )
    )
    done = _compile(source, generated, "-o", str(tmp_path / "glue_check"))
    assert done.returncode == 0, done.stderr[-4000:]
    assert subprocess.run([str(tmp_path / "glue_check")]).returncode == 0


def test_a_renamed_dim_is_a_compile_error(tmp_path, monkeypatch):
    # BucketSum's rows are "N" in the spec; renamed to "Rows", the kernel's shape reader no longer
    # compiles (dims.N is gone), where a string look-up would have returned -1 at run time.
    plain = _write_header(tmp_path / "plain", codegen.cpp_header())
    source = ROOT / "plugins" / "cpu" / "bucket_sum.cc"
    flags = ("-fsyntax-only",)
    assert _compile(source, plain, *flags).returncode == 0
    op = catalogue.BUCKET_SUM
    renamed = dataclasses.replace(
        op,
        inputs=tuple(dataclasses.replace(t, dims=tuple("Rows" if d == "N" else d for d in t.dims)) for t in op.inputs),
        outputs=op.outputs,
    )
    monkeypatch.setattr(codegen, "OPS", tuple(renamed if o is op else o for o in catalogue.OPS))
    broken = _write_header(tmp_path / "renamed", codegen.cpp_header())
    done = _compile(source, broken, *flags)
    assert done.returncode != 0
    # GCC and Clang quote differently (‘N’, 'N'): match the words and the member.
    assert re.search(r"no member named .N.", done.stderr), done.stderr[-2000:]


def test_float_attributes_resolve_in_the_schemas_words(tmp_path):
    # ResolveAttributes (plugins/cpu/validate.cc) on float attributes: defaults, bounds, finiteness
    # and the kinds that are no float (an ONNX INT, a string, a list), word for word as
    # schema.Attribute.check; and CheckResolvedAttributes carries a float through.
    op = catalogue.TOPK_EXPERTS
    index = [a.name for a in op.attributes].index("limit")
    cases = [  # (C++ RawAttribute fill, the Python value)
        ("r.kind = K::kFloat; r.float_value = 7.0;", 7.0),
        ("r.kind = K::kFloat; r.float_value = 0.25;", 0.25),
        ("r.kind = K::kFloat; r.float_value = 65504.0;", 65504.0),
        ("(void)r;", None),  # missing: the default
        ('r.kind = K::kFloat; r.float_value = std::nan("");', float("nan")),
        ('r.kind = K::kFloat; r.float_value = -std::nan("");', float("nan")),
        ("r.kind = K::kFloat; r.float_value = HUGE_VAL;", float("inf")),
        ("r.kind = K::kFloat; r.float_value = -HUGE_VAL;", float("-inf")),
        ("r.kind = K::kFloat; r.float_value = -0.5;", -0.5),
        ("r.kind = K::kFloat; r.float_value = 1e31;", 1e31),
        ("r.kind = K::kFloat; r.float_value = 65505.0;", 65505.0),
        ("r.kind = K::kInt; r.int_value = 7;", 7),
        ('r.kind = K::kString; r.string_value = "1.5";', "1.5"),
        ("r.kind = K::kFloats; r.float_values = {1.5, 2.0};", [1.5, 2.0]),
        ("r.kind = K::kInts; r.int_values = {1};", [1]),
    ]
    expected = []
    for _, value in cases:
        attrs = {"gating": "glu_clamped"} if value is None else {"gating": "glu_clamped", "limit": value}
        try:
            expected.append("ok " + repr(float(op.resolve_attributes(attrs)["limit"])))
        except ValueError as error:
            expected.append(str(error))
    body = []
    for fill, _ in cases:
        body += [
            "{",
            f"  std::vector<RawAttribute> raw({len(op.attributes)});",
            '  raw[1].kind = K::kString; raw[1].string_value = "glu_clamped";',
            f"  RawAttribute& r = raw[{index}];",
            f"  {fill}",
            "  Attributes attrs;",
            f"  std::string error = ResolveAttributes(spec::k{op.name}, raw, &attrs);",
            f"  if (error.empty()) error = CheckResolvedAttributes(spec::k{op.name}, attrs);",
            '  if (error.empty()) std::printf("ok %.17g\\n", attrs.Float("limit"));',
            '  else std::printf("%s\\n", error.c_str());',
            "}",
        ]
    source = tmp_path / "float_attributes.cc"
    source.write_text(
        "\n".join(
            [
                "#include <cmath>",
                "#include <cstdio>",
                '#include "bucketrt/op_specs.h"',
                '#include "bucketrt/validate.h"',
                "using namespace bucketrt;",
                "using K = RawAttribute::Kind;",
                "int main() {",
                *body,
                "  return 0;",
                "}",
            ]
        )
    )
    generated = _write_header(tmp_path, codegen.cpp_header())
    binary = tmp_path / "float_attributes"
    done = _compile(source, generated, str(ROOT / "plugins" / "cpu" / "validate.cc"), "-o", str(binary))
    assert done.returncode == 0, done.stderr[-4000:]
    lines = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.splitlines()
    # %.17g against repr: the same double (repr is the shortest form that reads back to it).
    got = ["ok " + repr(float(line[3:])) if line.startswith("ok ") else line for line in lines]
    assert got == expected
    assert expected[:4] == ["ok 7.0", "ok 0.25", "ok 65504.0", "ok 0.0"]
    assert "TopKExperts: attribute 'limit' must be a float, got 7" in expected
    assert "TopKExperts: attribute 'limit' must be finite, got nan" in expected
