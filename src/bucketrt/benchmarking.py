"""Wall-clock timing shared by `bucketrt bench` and benchmarks/: same method for every backend."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    runs: int

    @property
    def ms(self) -> float:
        return self.median_s * 1e3


def measure(fn: Callable[[], object], *, warmup: int = 1, repeat: int = 5, budget_s: float | None = None) -> Timing:
    """Median of `repeat` timed calls after `warmup` untimed ones.

    With `budget_s`, stops early (after at least one timed call) once the timed calls have used
    the budget, so that slow configurations at long sequences keep a benchmark bounded.
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
        if budget_s is not None and spent >= budget_s:
            break
    return Timing(statistics.median(samples), min(samples), len(samples))


@dataclass(frozen=True)
class ModelRow:
    sequence_length: int
    torch: Timing
    ort: Timing

    @property
    def speedup(self) -> float:
        return self.torch.median_s / self.ort.median_s


def bench_export(
    output_dir,
    sequence_lengths=(512, 1024, 2048, 4096),
    batch_size: int = 1,
    threads: int | None = None,
    repeat: int = 3,
    budget_s: float = 30.0,
    providers=None,
    on_row: Callable[[ModelRow], None] | None = None,
) -> list[ModelRow]:
    """ONNX Runtime with bucketrt's ops against PyTorch eager, on the same export and inputs.

    Both run the same model (the export and its rebuilt reference) with the same thread count,
    one sequence length after the other, in this one process.
    """
    import os

    import torch

    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.exporter import load_reference, make_inputs
    from bucketrt.library import ort_session

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    manifest = read_manifest(output_dir)
    reference = load_reference(output_dir, manifest=manifest)
    # The first component (the only one of most exports; a seq2seq export's encoder), as reference.run runs.
    first = manifest["components"][0]["name"]
    session = ort_session(output_dir, providers=providers, intra_op_num_threads=threads, component=first)
    rows = []
    for length in sequence_lengths:
        feeds = make_inputs(manifest, batch_size=batch_size, sequence_length=length, padding=False)
        with torch.inference_mode():
            torch_t = measure(lambda: reference.run(feeds), repeat=repeat, budget_s=budget_s)
        ort_t = measure(lambda: session.run(None, feeds), repeat=repeat, budget_s=budget_s)
        row = ModelRow(length, torch_t, ort_t)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def cpu_isa() -> dict:
    """The CPU's model name and the instruction sets int8 and bf16 speed depends on (from
    /proc/cpuinfo where there is one): AVX2, AVX-512, VNNI (AVX-512 or AVX), AMX, AVX-512 BF16;
    and the capability PyTorch dispatches to."""
    flags: set[str] = set()
    name = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
                elif key.strip() == "model name" and name is None:
                    name = value.strip()
    except OSError:
        pass
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        capability = None
    return {
        "cpu": name,
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "amx": bool({"amx_int8", "amx_tile"} & flags),
        "avx512_bf16": "avx512_bf16" in flags,
        "torch_capability": capability,
        "bucketrt_kernels": cpu_kernel_variants(),
    }


def cpu_kernel_variants() -> dict[str, str]:
    """What bucketrt's CPU kernels run on this CPU: kernel family -> instruction-set variant, as the
    installed op library picks them (its BucketrtCpuVariants(); BUCKETRT_SIMD caps them), e.g.
    {"int8_gemm": "avx512vnni", "expert_ffn_tile": "avx512", ...}. Empty without the library."""
    import ctypes

    from bucketrt.errors import LibraryNotBuiltError
    from bucketrt.library import library_path

    try:
        function = ctypes.CDLL(library_path()).BucketrtCpuVariants
    except (LibraryNotBuiltError, OSError, AttributeError):
        return {}
    function.restype = ctypes.c_char_p
    function.argtypes = []
    pairs = (entry.partition("=") for entry in (function() or b"").decode().split(";") if entry)
    return {name: variant for name, _, variant in pairs}


def describe_isa(isa: dict) -> str:
    marks = ", ".join(f"{label} {'yes' if isa[key] else 'no'}" for key, label in _ISA_LABELS)
    line = f"{isa['cpu'] or 'unknown CPU'}: {marks}; PyTorch dispatches {isa['torch_capability']}"
    variants = isa.get("bucketrt_kernels")
    if variants:
        line += "; bucketrt's CPU kernels: " + ", ".join(f"{k} {v}" for k, v in variants.items())
    return line


_ISA_LABELS = (
    ("avx2", "AVX2"),
    ("avx512", "AVX-512"),
    ("vnni", "VNNI"),
    ("amx", "AMX"),
    ("avx512_bf16", "AVX512-BF16"),
)


def plot_scaling(series: dict[str, list[tuple[int, float]]], path, title: str = "", size=(8.0, 5.0), dpi: int = 100):
    """Time against sequence length, log-log, one line per series ("backend precision" -> [(N, ms)]),
    with linear and quadratic slopes for reference, anchored at the first length's median series;
    written as a PNG of size[0]*dpi x size[1]*dpi pixels. Returns the path."""
    import statistics as stats

    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    points = {label: sorted(p for p in values if p[1] > 0) for label, values in series.items()}
    points = {label: p for label, p in points.items() if p}
    if not points:
        raise ValueError("nothing to plot: no series has a positive time")
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    try:
        for label, p in points.items():
            ax.plot([n for n, _ in p], [ms for _, ms in p], marker="o", label=label)
        lengths = sorted({n for p in points.values() for n, _ in p})
        first = lengths[0]
        anchor = (
            stats.median(ms for p in points.values() for n, ms in p if n == first)
            if any(p[0][0] == first for p in points.values())
            else stats.median(p[0][1] for p in points.values())
        )
        if len(lengths) > 1:
            for power, style, name in ((1, ":", "linear (∝ N)"), (2, "--", "quadratic (∝ N²)")):
                ax.plot(lengths, [anchor * (n / first) ** power for n in lengths], style, color="gray", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel("time per run (ms, median)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path
