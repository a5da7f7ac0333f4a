"""Serving benchmark (run by benchmarks/run.py --only serving, or alone): throughput and latency
against concurrency for a yoso-4096-size model (the yoso-4096 preset in LSH mode, random weights).

Three ways to serve the same export, each with 1, 4 and 16 clients sending batch-1 requests of one
length at once, for a fixed time per point:
  - in-process ONNX Runtime: one bucketrt.ort_session shared by the client threads;
  - Triton (the nvidia-pytriton wheel's tritonserver, Python backend, `bucketrt triton`), HTTP
    clients, dynamic batching on (max_batch_size 8, max queue delay --delay-us);
  - the same without batching (max_batch_size 0: each request alone).
Triton runs one model instance, and ORT its default intra-op threads, in both.

    python benchmarks/serving.py [--length 512] [--seconds 10] [--concurrency 1,4,16] [--model yoso-4096]

The export is cached under out/bench/serving/. Needs the server environment (make triton-env).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

OUT = Path("out/bench/serving")
MODEL = "yoso-4096"
ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")


def _say(say, line=""):
    (say or print)(line)


def isa_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    return f"{model}; " + " ".join(f for f in ISA if f in flags)


def _export(model: str) -> Path:
    from bucketrt.exporter import export

    folder = OUT / f"{model}-lsh"
    if not (folder / "bucketrt.json").is_file():
        export(model, folder, seed=0, config_overrides={"use_expectation": False})
    return folder


def _repository(export_dir: Path, delay_us: int) -> Path:
    from bucketrt.serving import write_repository

    repo = OUT / "repository"
    write_repository(export_dir, repo, name="batched", max_batch_size=8, max_queue_delay_us=delay_us, overwrite=True)
    write_repository(export_dir, repo, name="unbatched", max_batch_size=0, overwrite=True)
    return repo


def _load(call, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """`clients` threads calling call(k) for `seconds`: (requests/s, p50 ms, p99 ms, errors)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def loop(k):
        mine = []
        start.wait()
        end = time.perf_counter() + seconds
        while (t := time.perf_counter()) < end:
            try:
                call(k)
            except Exception:
                errors[0] += 1
                continue
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if not latencies:
        return 0.0, float("nan"), float("nan"), errors[0]
    ms = np.array(latencies) * 1e3
    return len(latencies) / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), errors[0]


def run(
    length: int = 512, seconds: float = 10.0, concurrency=(1, 4, 16), delay_us: int = 2000, model=MODEL, say=None
) -> None:
    import tritonclient.http as httpclient

    import bucketrt
    from bucketrt.serving.server import TritonServer

    export_dir = _export(model)
    repo = _repository(export_dir, delay_us)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 1000, (1, length), dtype=np.int64)
    session = bucketrt.ort_session(export_dir, providers=["CPUExecutionProvider"])
    feeds = {
        i.name: ids if i.name == "input_ids" else (np.ones_like(ids) if "mask" in i.name else np.zeros_like(ids))
        for i in session.get_inputs()
    }
    output = session.get_outputs()[0].name
    expected = session.run([output], feeds)[0]

    _say(say, f"## Serving: {model} (LSH mode), batch-1 requests of {length} tokens, {seconds:.0f} s per point")
    _say(say, "")
    # Other processes' load changes every figure on a shared machine: printed before and after.
    _say(say, f"CPU: {isa_flags()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    _say(say, "")
    _say(say, "| server | clients | requests/s | p50 ms | p99 ms | errors |")
    _say(say, "|---|---:|---:|---:|---:|---:|")

    def row(name, clients, result):
        rps, p50, p99, errors = result
        _say(say, f"| {name} | {clients} | {rps:.2f} | {p50:.1f} | {p99:.1f} | {errors} |")

    for clients in concurrency:
        row("in-process ORT", clients, _load(lambda k: session.run([output], feeds), clients, seconds))

    with TritonServer(repo) as server:
        # One client per thread: the HTTP client (gevent) cannot be shared across threads.
        local = threading.local()

        def client():
            if not hasattr(local, "client"):
                local.client = httpclient.InferenceServerClient(server.http_url, network_timeout=600)
            return local.client

        def infer(model):
            def call(k):
                inputs = []
                for name, value in feeds.items():
                    x = httpclient.InferInput(name, list(value.shape), "INT64")
                    x.set_data_from_numpy(value)
                    inputs.append(x)
                got = client().infer(model, inputs, outputs=[httpclient.InferRequestedOutput(output)]).as_numpy(output)
                if not np.array_equal(got, expected):
                    raise AssertionError("answer differs from the in-process run")

            return call

        for model, label in (("batched", "Triton, dynamic batching"), ("unbatched", "Triton, no batching")):
            infer(model)(0)  # warm-up
            for clients in concurrency:
                row(label, clients, _load(infer(model), clients, seconds))
            stats = client().get_inference_statistics(model)["model_stats"][0]
            _say(
                say,
                f"| ({label}: {stats['inference_count']} requests in {stats['execution_count']} executions) | | | | | |",
            )
    _say(say, "")
    _say(say, f"Load average at the end: {os.getloadavg()[0]:.1f}")
    _say(say, "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--delay-us", type=int, default=2000, help="Triton's max queue delay with batching on")
    parser.add_argument("--model", default=MODEL, help="a YOSO preset (exported in LSH mode)")
    args = parser.parse_args(argv)
    run(args.length, args.seconds, tuple(int(c) for c in args.concurrency.split(",")), args.delay_us, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
