"""Which instruction-set variant each family of CPU kernels runs (the library's
BucketrtCpuVariants(), bucketrt.benchmarking.cpu_kernel_variants()), and BUCKETRT_SIMD's cap: so
that the tests that compare the variants in child processes compare what they claim to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bucketrt.benchmarking import cpu_kernel_variants

FAMILIES = ["hash_attention", "expert_ffn_tile", "expert_activation", "int8_gemm", "int8_quantize"]


def _cpu_flags() -> set[str]:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags")
    return set(line.split(":", 1)[1].split())


def _variants_in_child(cap: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BUCKETRT_SIMD"}
    if cap is not None:
        env["BUCKETRT_SIMD"] = cap
    code = (
        "import json; from bucketrt.benchmarking import cpu_kernel_variants; print(json.dumps(cpu_kernel_variants()))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _widest(flags: set[str]) -> dict[str, str]:
    """The rule of the pickers (plugins/cpu/int8_gemm.cc, expert_ffn.cc, simd.h), from the flags."""
    avx2, fma = "avx2" in flags, "fma" in flags
    avx512 = "avx512f" in flags
    vnni = avx512 and {"avx512bw", "avx512_vnni"} <= flags
    amx = vnni and {"amx_tile", "amx_int8"} <= flags
    tile = "avx512" if fma and avx512 else "avx2" if fma and avx2 else "generic"
    return {
        "hash_attention": "avx2" if avx2 else "generic",
        "expert_ffn_tile": tile,
        "expert_activation": tile,
        "int8_gemm": "amx" if amx else "avx512vnni" if vnni else "avx2" if avx2 else "generic",
        "int8_quantize": "avx512" if avx512 else "avx2" if avx2 else "generic",
    }


def test_the_widest_variants_this_cpu_has():
    flags = _cpu_flags()
    variants = _variants_in_child(None)
    assert list(variants) == FAMILIES
    assert variants == _widest(flags)
    if os.environ.get("BUCKETRT_SIMD") is None:
        assert cpu_kernel_variants() == variants  # this process: the same library, the same pick


def test_avx2_cap_takes_no_avx512():
    flags = _cpu_flags()
    variants = _variants_in_child("avx2")
    assert variants == _widest(flags - {"avx512f", "avx512bw", "avx512_vnni"})
    assert not any("avx512" in v for v in variants.values())


def test_avx512_cap_takes_no_amx():
    flags = _cpu_flags()
    variants = _variants_in_child("avx512")
    assert variants == _widest(flags - {"amx_tile", "amx_int8"})


def test_generic_cap_takes_the_baseline_everywhere():
    assert _variants_in_child("generic") == dict.fromkeys(FAMILIES, "generic")
