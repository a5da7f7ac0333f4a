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

    from . import ort_session
    from .exporter import load_reference, make_inputs, read_manifest

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    manifest = read_manifest(output_dir)
    reference = load_reference(output_dir)
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
