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


@dataclass(frozen=True)
class GenerationTiming:
    """A causal LM's generation, timed through bucketrt's own greedy loop (runtime.decoding):
    `prefill` the first step (the prompt with an empty cache, up to its first token), `step` one
    later decode step (one token per row with the cache), over `new_tokens` steps per run."""

    batch_size: int
    prompt_length: int
    new_tokens: int
    prefill: Timing
    step: Timing | None  # None when new_tokens is 1 (a prefill alone)

    @property
    def tokens_per_s(self) -> float | None:
        """Decoded tokens per second, every row counted."""
        return self.batch_size / self.step.median_s if self.step else None


def time_generation(
    session, input_ids, new_tokens: int = 128, repeat: int = 3, budget_s: float | None = None
) -> GenerationTiming:
    """Prefill and decode times of a cached decoder-only export (`session` as runtime.decoding takes
    it) for the prompt `input_ids` [batch, N], through `decoding.iter_causal` (no end of sequence:
    every run decodes `new_tokens`), so that whatever the runtime's generation loop does per step
    (copies of the cache, bindings) is in the figure. Medians over `repeat` runs after one warm-up;
    a run's step time is its decode time over its `new_tokens` - 1 later steps."""
    import numpy as np

    from bucketrt.runtime import decoding

    ids = np.asarray(input_ids, dtype=np.int64)
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be at least 1 (the prefill's token), got {new_tokens}")
    prefills: list[float] = []
    steps: list[float] = []
    spent = 0.0
    for run in range(max(1, repeat) + 1):  # run 0 warms up
        started = time.perf_counter()
        tokens = decoding.iter_causal(session, ids, max_new_tokens=new_tokens if run else min(new_tokens, 4))
        next(tokens)
        first = time.perf_counter()
        for _ in tokens:
            pass
        done = time.perf_counter()
        if run:
            prefills.append(first - started)
            steps.append((done - first) / max(new_tokens - 1, 1))
            spent += done - started
            if budget_s is not None and spent >= budget_s:
                break
    return GenerationTiming(
        ids.shape[0],
        ids.shape[1],
        new_tokens,
        Timing(statistics.median(prefills), min(prefills), len(prefills)),
        Timing(statistics.median(steps), min(steps), len(steps)) if new_tokens > 1 else None,
    )


def bench_generation(
    output_dir,
    prompt_lengths=(128, 1024),
    batch_sizes=(1, 4),
    new_tokens: int = 128,
    threads: int | None = None,
    repeat: int = 3,
    budget_s: float | None = 60.0,
    providers=None,
    seed: int = 0,
    on_row: Callable[[GenerationTiming], None] | None = None,
) -> list[GenerationTiming]:
    """`time_generation` of a text-generation export in ONNX Runtime for every batch size and prompt
    length (random prompt tokens, no padding), one after the other in this process."""
    import os

    import numpy as np

    from bucketrt.errors import BucketrtError
    from bucketrt.export_format.manifest import read_manifest
    from bucketrt.library import ort_session
    from bucketrt.runtime import decoding

    manifest = read_manifest(output_dir)
    threads = threads or os.cpu_count() or 1
    session = ort_session(output_dir, providers=providers, intra_op_num_threads=threads)
    if not decoding.takes_cache(session):
        raise BucketrtError(
            f"{output_dir} is a {manifest['task']} export without a key/value cache",
            "time prefill and decode on a text-generation export of a causal LM (bucketrt export --task text-generation)",
        )
    vocab = int(manifest.get("config", {}).get("vocab_size") or 2)
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batch_sizes:
        for length in prompt_lengths:
            ids = rng.integers(0, vocab, (batch, length))
            row = time_generation(session, ids, new_tokens, repeat, budget_s)
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


def plot_generation(series: dict, path, title: str = "", size=(12.0, 8.0), dpi: int = 100):
    """Tokens per second of causal-LM generation: prefill against the prompt length (one line per
    series and batch size) and decode against the batch size (one line per series and prompt
    length). `series` maps a label ("bucketrt int8", ...) to GenerationTiming-like rows (batch_size,
    prompt_length, prefill.median_s, tokens_per_s). Written as a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    series = {label: rows for label, rows in series.items() if rows}
    if not series:
        raise ValueError("nothing to plot: no series has a row")
    fig, (prefill_ax, decode_ax) = plt.subplots(1, 2, figsize=size, dpi=dpi)
    try:
        for index, (label, rows) in enumerate(series.items()):
            color = f"C{index % 10}"
            for style, batch in zip(("-", "--", ":", "-."), sorted({r.batch_size for r in rows})):
                points = sorted(
                    (r.prompt_length, r.batch_size * r.prompt_length / r.prefill.median_s)
                    for r in rows
                    if r.batch_size == batch
                )
                prefill_ax.plot(*zip(*points), style, color=color, marker="o", label=f"{label}, batch {batch}")
            for style, length in zip(("-", "--", ":", "-."), sorted({r.prompt_length for r in rows})):
                points = sorted(
                    (r.batch_size, r.tokens_per_s) for r in rows if r.prompt_length == length and r.tokens_per_s
                )
                if not points:
                    continue
                decode_ax.plot(*zip(*points), style, color=color, marker="o", label=f"{label}, prompt {length}")
        prefill_ax.set_xscale("log", base=2)
        prefill_ax.set_xlabel("prompt length (tokens)")
        prefill_ax.set_ylabel("prefill tokens/s (all rows)")
        prefill_ax.set_title("prefill")
        decode_ax.set_xscale("log", base=2)
        decode_ax.set_xlabel("batch size")
        decode_ax.set_ylabel("decode tokens/s (all rows)")
        decode_ax.set_title("decode")
        for ax in (prefill_ax, decode_ax):
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            # Below the axes: a legend inside would hide the lines of a dozen series.
            ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path
