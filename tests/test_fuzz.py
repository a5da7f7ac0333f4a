"""Fuzzing every op through ONNX Runtime with generated bad inputs (tests/fuzz_cases.py).

The cases run in child processes, many per child, so that a crash shows as a signal and a hang as
a timeout without taking pytest down: the child announces each case before running it, so the
parent knows the culprit, records it, and starts a fresh child on the cases after it. Each case
then passes only with a clean error naming the op where the PyTorch reference rejects the call,
or a result equal to the reference's where it accepts it: zero crashes, zero hangs, zero silent
acceptance.

BUCKETRT_FUZZ_TIMEOUT (seconds per case, default 20) is raised by `make sanitize`, where the
ASan/UBSan build runs slower.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from fuzz_cases import generate

CASES = generate()
BY_ID = {c.id: c for c in CASES}
ASAN_OUT_OF_MEMORY = "ERROR: AddressSanitizer: allocator is out of memory"
HERE = Path(__file__).resolve().parent
CASE_SECONDS = float(os.environ.get("BUCKETRT_FUZZ_TIMEOUT", "20"))
STARTUP_SECONDS = 120.0  # importing torch and onnxruntime in a child, on a loaded 2-core machine
CHILDREN = 2


def _spawn(ids: list[str], stderr) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, str(HERE / "fuzz_cases.py"), "--child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,  # a file, not a pipe: ORT logs every failed run there, which would fill a pipe
        text=True,
        start_new_session=True,  # its own process group: a timeout kills it and anything it started
    )
    child.stdin.write("\n".join(ids) + "\n")
    child.stdin.close()
    return child


class _Batch:
    """One child running a list of case ids, read line by line without blocking."""

    def __init__(self, ids: list[str], case_seconds: float):
        self.ids = ids
        self.case_seconds = case_seconds
        self.done: dict[str, dict] = {}
        self.current: str | None = None
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.child = _spawn(ids, self.stderr)
        self.deadline = time.monotonic() + STARTUP_SECONDS
        self.buffer = ""

    def fileno(self) -> int:
        return self.child.stdout.fileno()

    def remaining(self) -> list[str]:
        return [i for i in self.ids if i not in self.done]

    def feed(self) -> bool:
        """Reads what is there; returns False at end of output."""
        chunk = os.read(self.fileno(), 1 << 16).decode()
        if not chunk:
            return False
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if line.startswith("START "):
                self.current = line[6:]
                self.deadline = time.monotonic() + self.case_seconds
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
                self.done[result["id"]] = result
                self.current = None
        return True

    def kill(self) -> None:
        try:
            os.killpg(self.child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.child.wait()

    def finish(self, how: str) -> None:
        """Records the case in progress (if any) as crashed/hung."""
        self.stderr.seek(0)
        stderr = self.stderr.read()
        self.stderr.close()
        # A sanitizer's report: from its first line (what and where), else the end of stderr.
        found = [i for i in (stderr.find("ERROR: AddressSanitizer"), stderr.find("runtime error:")) if i >= 0]
        stderr = stderr[stderr.rfind("\n", 0, min(found)) + 1 :][:1500] if found else stderr[-1500:]
        if self.current is not None and self.current not in self.done:
            if how == "timeout":
                detail = f"no result within {self.case_seconds:.0f} s"
            else:
                code = self.child.returncode
                detail = f"child died with {'signal ' + signal.Signals(-code).name if code < 0 else f'exit {code}'}"
                detail += f"; stderr: {stderr}"
            verdict = how
            if (
                how == "crash"
                and ASAN_OUT_OF_MEMORY in stderr
                and self.current in BY_ID
                and BY_ID[self.current].may_reject
            ):
                # ASan's operator new cannot fail by throwing std::bad_alloc, as the plain build's
                # does (which ORT and the library turn into an error, as `make test` checks for
                # this same case): it aborts. That is no finding of the sanitizers.
                verdict, detail = "ok", "a huge allocation ASan cannot fail gracefully: " + detail[:300]
            self.done[self.current] = {"id": self.current, "verdict": verdict, "detail": detail}
        elif not self.done and how != "exit":
            raise RuntimeError(f"fuzz child failed before its first case ({how}): {stderr}")
        self.child.stdout.close()


def how_it_ended(batch: _Batch) -> str:
    return f"exit status {batch.child.returncode}"


def run_all(ids: list[str], case_seconds: float = CASE_SECONDS) -> dict[str, dict]:
    # Interleaved so that both children get a share of every op.
    queues = [ids[i::CHILDREN] for i in range(CHILDREN)]
    results: dict[str, dict] = {}
    running = [_Batch(q, case_seconds) for q in queues if q]
    while running:
        ready, _, _ = select.select(running, [], [], 1.0)
        for batch in list(running):
            if batch in ready and batch.feed():
                continue
            ended = batch in ready  # end of output: the child exited or died
            timed_out = not ended and time.monotonic() > batch.deadline
            if not ended and not timed_out:
                continue
            if timed_out:
                batch.kill()
            else:
                batch.child.wait()
            batch.finish("timeout" if timed_out else ("crash" if batch.child.returncode else "exit"))
            results.update(batch.done)
            running.remove(batch)
            rest = batch.remaining()
            if rest and not batch.done:
                raise RuntimeError(f"a fuzz child ({how_it_ended(batch)}) ran none of its {len(rest)} cases")
            if rest:
                running.append(_Batch(rest, case_seconds))
    return results


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    return run_all([c.id for c in CASES])


def _params():
    for case in CASES:
        yield pytest.param(case.id, id=case.id)


@pytest.mark.parametrize("case_id", list(_params()))
def test_fuzz_case(results, case_id):
    result = results.get(case_id)
    assert result is not None, f"{case_id}: no verdict"
    assert result["verdict"] == "ok", f"{case_id}: {result['verdict']}: {result.get('detail')}"


def test_every_op_is_fuzzed():
    from bucketrt.ops.catalogue import OPS

    fuzzed = {c.op for c in CASES}
    assert fuzzed == {op.name for op in OPS}
    for op in OPS:
        kinds = {c.kind for c in CASES if c.op == op.name}
        wanted = {"valid", "rank", "dtype", "dims", "dims-huge", "nonfinite", "attr-name", "combo"}
        if op.attributes:  # (LinearInt8 has none: an unknown one, attr-name, is all there is to try)
            wanted.add("attr-type")
        if any(a.type == "int" for a in op.attributes):
            wanted.add("attr-huge")
        assert wanted <= kinds, (op.name, wanted - kinds)


def test_valid_cases_compute_something(results):
    # The unmutated call of every base is accepted and equal to the reference: a harness that
    # judged every call "ok" by rejecting it would fail here.
    valid = [c.id for c in CASES if c.kind == "valid"]
    assert valid
    for case_id in valid:
        assert results[case_id]["verdict"] == "ok", results[case_id]
        assert results[case_id]["detail"] == "equal to the reference", results[case_id]


def test_harness_names_crashes_and_hangs():
    # A segfault and a hang in the middle of a batch are pinned on their cases; the cases after
    # them still run (in a fresh child) and pass.
    valid = [c.id for c in CASES if c.kind == "valid"][:2]
    # Two children: [segfault, valid 0] and [hang, valid 1].
    ids = ["harness/segfault", "harness/hang", valid[0], valid[1]]
    results = run_all(ids, case_seconds=10)
    assert results["harness/segfault"]["verdict"] == "crash"
    assert "SEGV" in results["harness/segfault"]["detail"]  # SIGSEGV, or ASan's SEGV report (then SIGABRT)
    assert results["harness/hang"]["verdict"] == "timeout"
    assert all(results[i]["verdict"] == "ok" for i in valid), results
