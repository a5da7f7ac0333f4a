"""Concurrency and soak: the op library inside a long-running, multi-threaded server.

One session called from 8 threads gives bit-for-bit the outputs of serial calls; two sessions in
one process (different intra-op thread counts) run side by side and agree; intra-op 1, 2 and 4
threads give identical bits; RSS stays flat over a few thousand runs.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bucketrt.library import op_session
from bucketrt.ops.catalogue import BY_NAME

# `make sanitize` preloads ASan, whose shadow memory and quarantine of freed blocks make RSS no
# measure of the library's own memory.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# Sizes large enough that every kernel splits its work over several workers.
def lsh(rng):
    b, n, m, d, cap = 3, 160, 8, 40, 64
    mask = (rng.random((b, n)) > 0.2).astype(np.int32)
    codes = rng.integers(0, cap, (b, n, m), dtype=np.int32)
    return {
        "query_mask": mask,
        "query_hash": codes,
        "key_mask": mask[:, ::-1].copy(),
        "key_hash": rng.integers(0, cap, (b, n, m), dtype=np.int32),
        "value": _f32(rng, b, n, d),
    }, {"hashtable_capacity": cap}


def sign(rng):
    return {
        "mask": np.ones((4, 64), np.int32),
        "vector": _f32(rng, 4, 64, 32),
        "projection": np.where(rng.random((2, 6, 32)) > 0.5, 1.0, -1.0).astype(np.float32),
    }, {"num_hash": 8, "hash_code_len": 8}


def argmax(rng):
    return {
        "mask": np.ones((2, 48), np.int32),
        "vector": _f32(rng, 2, 3, 48, 16),
        "projection": _f32(rng, 3, 16, 2 * 4),
        "bucket_sizes": np.array([8], np.int32),
    }, {"num_hash": 2}


def chunk(rng):
    b, h, n, d, r = 2, 2, 64, 16, 2
    return {
        "query": _f32(rng, b, h, n, d),
        "key": _f32(rng, b, h, n, d),
        "value": _f32(rng, b, h, n, d),
        "mask": (rng.random((b, n)) > 0.1).astype(np.int32),
        "buckets": rng.integers(0, 8, (b, h, r, n), dtype=np.int32),
    }, {"chunk_length": 8, "chunks_before": 1, "chunks_after": 1, "causal": 1}


def bucket_sum(rng):
    return {
        "bucket": rng.integers(0, 16, (4, 100), dtype=np.int32),
        "weight": _f32(rng, 4, 100),
        "vector": _f32(rng, 4, 100, 24),
    }, {"num_buckets": 16}


def top1(rng):
    logits = _f32(rng, 3, 40, 6)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {"probs": probs.astype(np.float32)}, {"expert_capacity": 8}


def expert_ffn(rng):
    b, s, d, f, e = 2, 30, 16, 300, 4
    order = rng.permutation(b * s).astype(np.int32)
    counts = np.array([15, 0, 20, 18], np.int32)
    order[counts.sum() :] = -1
    return {
        "hidden": _f32(rng, b, s, d),
        "order": order.reshape(b, s),
        "counts": counts,
        "gate": _f32(rng, b, s),
        "wi": _f32(rng, e, f, d),
        "wo": _f32(rng, e, d, f),
    }, {"activation": "gelu"}


def expert_ffn_int8(rng):
    inputs, _ = expert_ffn(rng)
    e, f, d = inputs["wi"].shape
    inputs["wi"] = rng.integers(-127, 128, (e, f, d), dtype=np.int8)
    inputs["wi_scale"] = (rng.random((e, f)) * 0.1).astype(np.float32)
    inputs["wo"] = rng.integers(-127, 128, (e, d, f), dtype=np.int8)
    inputs["wo_scale"] = (rng.random((e, d)) * 0.1).astype(np.float32)
    names = ("hidden", "order", "counts", "gate", "wi", "wi_scale", "wo", "wo_scale")
    return {k: inputs[k] for k in names}, {"activation": "gelu"}


MAKERS = {
    "LSHCumulation": lsh,
    "SignHash": sign,
    "ArgmaxHash": argmax,
    "SortedChunkAttention": chunk,
    "BucketSum": bucket_sum,
    "Top1Dispatch": top1,
    "ExpertFFN": expert_ffn,
    "ExpertFFNInt8": expert_ffn_int8,
}
INPUTS_PER_OP = 16


def test_every_op_is_covered():
    assert set(MAKERS) == set(BY_NAME)


def _feeds(op: str) -> tuple[list[dict], dict]:
    calls = [MAKERS[op](np.random.default_rng([7, i])) for i in range(INPUTS_PER_OP)]
    return [feeds for feeds, _ in calls], calls[0][1]


def _session(op: str, attrs: dict, threads: int):
    return op_session(BY_NAME[op], attrs, intra_op_num_threads=threads)


def _bits(outputs: list[np.ndarray]) -> list[bytes]:
    return [o.tobytes() for o in outputs]


@pytest.mark.parametrize("op", sorted(MAKERS))
def test_one_session_from_8_threads_matches_serial(op):
    feeds, attrs = _feeds(op)
    session = _session(op, attrs, 2)
    serial = [_bits(session.run(None, f)) for f in feeds]
    work = [i for i in range(len(feeds)) for _ in range(4)]
    random.Random(op).shuffle(work)
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda i: (i, _bits(session.run(None, feeds[i]))), work))
    for i, bits in concurrent:
        assert bits == serial[i], f"{op}: input {i} gave other bits from 8 threads"


@pytest.mark.parametrize("op", sorted(MAKERS))
def test_two_sessions_in_one_process_and_intra_op_threads_agree(op):
    feeds, attrs = _feeds(op)
    sessions = {threads: _session(op, attrs, threads) for threads in (1, 2, 4)}
    serial = {threads: [_bits(s.run(None, f)) for f in feeds] for threads, s in sessions.items()}
    assert serial[2] == serial[1] and serial[4] == serial[1], f"{op}: intra-op 1/2/4 threads disagree"
    # Two sessions (1 and 4 intra-op threads) side by side, from 4 threads.
    work = [(threads, i) for threads in (1, 4) for i in range(len(feeds)) for _ in range(2)]
    random.Random(op).shuffle(work)
    with ThreadPoolExecutor(4) as pool:
        both = list(pool.map(lambda w: (w, _bits(sessions[w[0]].run(None, feeds[w[1]]))), work))
    for (threads, i), bits in both:
        assert bits == serial[1][i], f"{op}: input {i} on the {threads}-thread session disagrees"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
@pytest.mark.skipif(UNDER_ASAN, reason="RSS under ASan is its shadow and quarantine")
def test_rss_flat_over_thousands_of_runs():
    # Every op, 3,000 runs in all after a warm-up that lets ORT's arena and the allocator reach
    # their working set. 24 MiB is generous against allocator noise (arena growth rounds, malloc
    # fragmentation between Python objects), yet a leak of one output or scratch buffer per run
    # (at least 8 KiB here, several per op) would add 24 MiB or more over these runs.
    sessions = []
    for op in sorted(MAKERS):
        feeds, attrs = _feeds(op)
        sessions.append((_session(op, attrs, 2), feeds[:4]))

    def run(rounds):
        for r in range(rounds):
            for session, feeds in sessions:
                session.run(None, feeds[r % len(feeds)])

    runs_per_round = len(sessions)
    run(300 // runs_per_round + 1)
    before = _rss_bytes()
    run(3000 // runs_per_round + 1)
    grown = _rss_bytes() - before
    print(f"RSS grew {grown / 2**20:.1f} MiB over 3,000 runs")
    assert grown < 24 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB over 3,000 runs"
