"""Concurrency and soak: the op library inside a long-running, multi-threaded server.

One session called from 8 threads gives bit-for-bit the outputs of serial calls; two sessions in
one process (different intra-op thread counts) run side by side and agree; intra-op 1, 2 and 4
threads give identical bits; RSS stays flat over a few thousand runs. The calls are the one table's
(tests/op_inputs.py), every op's at sizes where its kernel splits the work over several workers.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from op_inputs import workers_calls

from bucketrt.library import op_session
from bucketrt.ops.catalogue import BY_NAME

# `make sanitize` preloads ASan, whose shadow memory and quarantine of freed blocks make RSS no
# measure of the library's own memory.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


# The one table's calls large enough that every kernel splits its work over several workers
# (tests/op_inputs.py): case id ("SignHash-hadamard"), op, maker.
CALLS = {case: (op, make) for case, op, make in workers_calls()}
INPUTS_PER_OP = 16


def test_every_op_is_covered():
    assert {op for op, _ in CALLS.values()} == set(BY_NAME)


def _feeds(case: str) -> tuple[str, list[dict], dict]:
    op, make = CALLS[case]
    calls = [make(np.random.default_rng([7, i])) for i in range(INPUTS_PER_OP)]
    return op, [call.inputs for call in calls], calls[0].attrs


def _session(op: str, attrs: dict, threads: int):
    return op_session(BY_NAME[op], attrs, intra_op_num_threads=threads)


def _bits(outputs: list[np.ndarray]) -> list[bytes]:
    return [o.tobytes() for o in outputs]


@pytest.mark.parametrize("case", sorted(CALLS))
def test_one_session_from_8_threads_matches_serial(case):
    op, feeds, attrs = _feeds(case)
    session = _session(op, attrs, 2)
    serial = [_bits(session.run(None, f)) for f in feeds]
    work = [i for i in range(len(feeds)) for _ in range(4)]
    random.Random(op).shuffle(work)
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda i: (i, _bits(session.run(None, feeds[i]))), work))
    for i, bits in concurrent:
        assert bits == serial[i], f"{op}: input {i} gave other bits from 8 threads"


@pytest.mark.parametrize("case", sorted(CALLS))
def test_two_sessions_in_one_process_and_intra_op_threads_agree(case):
    op, feeds, attrs = _feeds(case)
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
    for case in sorted(CALLS):
        op, feeds, attrs = _feeds(case)
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
