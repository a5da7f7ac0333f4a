"""bucketrt's CUDA kernels on torch CUDA tensors, through the op library's C ABI (tests, benchmarks).

The test-only harness library's `BucketrtCudaPlan` / `BucketrtCudaRun` and its data-report entry
points (plugins/cuda/harness.cc, libbucketrt_cuda_harness.so, installed beside the op library) run
the same spec checks and launchers as the op library's ONNX Runtime CUDA EP registration, so this
reaches the kernels without onnxruntime-gpu:

    >>> from bucketrt.library import cuda
    >>> (codes,) = cuda.run("SignHash", mask, vector, projection, num_hash=4, hash_code_len=8)

Needs only torch and the harness library: $BUCKETRT_CUDA_HARNESS when set, else the one beside the op
library (`bucketrt.library.library_path()`, which $BUCKETRT_LIBRARY moves). Errors raise `CudaOpError` with
the kernels' message (the CPU kernels' words).
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

import torch

from bucketrt.errors import CudaOpError, LibraryNotBuiltError

from . import library_path

__all__ = [
    "CudaOpError",
    "available",
    "enqueue_report",
    "harness_path",
    "plan",
    "report_bytes",
    "report_error",
    "run",
    "unavailable_reason",
]

HARNESS_ENV = "BUCKETRT_CUDA_HARNESS"
_HARNESS_NAME = "libbucketrt_cuda_harness.so"

_MAX_OUTPUTS = 8
# spec::DType codes the library reports for outputs.
_OUTPUT_DTYPES = {0: torch.int32, 1: torch.float32, 2: torch.float16}


def harness_path() -> str:
    """Path of the test-only CUDA harness library (which may not exist: a build without CUDA has none)."""
    override = os.environ.get(HARNESS_ENV)
    if override:
        return str(Path(override).resolve())
    return str(Path(library_path()).with_name(_HARNESS_NAME))


@cache
def _library(path: str):
    """The harness library at `path` with its entry points typed; None where there is none."""
    if not Path(path).is_file():
        return None
    lib = ctypes.CDLL(path)
    c_str_p = ctypes.POINTER(ctypes.c_char_p)
    lib.BucketrtCudaPlan.restype = ctypes.c_char_p
    lib.BucketrtCudaPlan.argtypes = [
        ctypes.c_char_p,
        ctypes.c_int,
        c_str_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int64),
    ]
    lib.BucketrtCudaRun.restype = ctypes.c_char_p
    lib.BucketrtCudaRun.argtypes = [
        ctypes.c_char_p,
        ctypes.c_int,
        c_str_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
    ]
    shapes = [ctypes.c_char_p, ctypes.c_int, c_str_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int64)]
    lib.BucketrtCudaReportBytes.restype = ctypes.c_char_p
    lib.BucketrtCudaReportBytes.argtypes = [*shapes, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
    lib.BucketrtCudaEnqueueReport.restype = ctypes.c_char_p
    lib.BucketrtCudaEnqueueReport.argtypes = [
        *shapes,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.BucketrtCudaReportError.restype = ctypes.c_char_p
    lib.BucketrtCudaReportError.argtypes = [*shapes, ctypes.c_char_p, ctypes.c_void_p]
    return lib


def unavailable_reason() -> str | None:
    """Why the CUDA kernels cannot run here (None when they can)."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        path = harness_path()
    except LibraryNotBuiltError as e:
        return str(e)
    if _library(path) is None:
        return (
            f"no CUDA harness library at {path}: bucketrt was built without CUDA (no nvcc at build time, "
            f"or BUCKETRT_CUDA=OFF), or ${HARNESS_ENV} points elsewhere"
        )
    return None


def available() -> bool:
    return unavailable_reason() is None


def _attributes(attrs: dict) -> bytes:
    items = []
    for name, value in attrs.items():
        if isinstance(value, str):
            items.append(f"{name}=s:{value}")
        elif isinstance(value, float):
            items.append(f"{name}=f:{value!r}")
        elif isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value) and value:
            items.append(f"{name}=F:{','.join(repr(v) for v in value)}")  # a list attribute: refused, as the wrong type
        elif isinstance(value, (list, tuple)):
            items.append(f"{name}=I:{','.join(str(int(v)) for v in value)}")
        elif isinstance(value, int):
            items.append(f"{name}=i:{int(value)}")
        else:  # a tensor, a graph...: an attribute of another kind, refused as the wrong type
            items.append(f"{name}=o:")
    return ";".join(items).encode()


class _Call:
    """The ctypes view of one call: inputs' dtypes, ranks, dims, pointers."""

    def __init__(self, op: str, inputs: tuple[torch.Tensor, ...], attrs: dict, host_only: bool = False):
        self.op = op.encode()
        self.inputs = [t.contiguous() for t in inputs]  # kept alive for the call
        n = len(self.inputs)
        self.n = n
        self.dtypes = (ctypes.c_char_p * max(n, 1))(
            *[str(t.dtype).removeprefix("torch.").encode() for t in self.inputs]
        )
        self.ranks = (ctypes.c_int * max(n, 1))(*[t.dim() for t in self.inputs])
        dims = [d for t in self.inputs for d in t.shape]
        self.dims = (ctypes.c_int64 * max(len(dims), 1))(*dims)
        self.pointers = (ctypes.c_void_p * max(n, 1))(*[t.data_ptr() for t in self.inputs])
        self.attrs = _attributes(attrs)
        if host_only:  # only dtypes and shapes are read (the data reports' host side)
            return
        devices = {t.device for t in self.inputs if t.is_cuda}
        self.device = next(iter(devices)) if devices else torch.device("cuda", torch.cuda.current_device())
        if len(devices) > 1 or any(not t.is_cuda for t in self.inputs):
            raise CudaOpError(
                f"{op}: every input must be a CUDA tensor on one device, got {[str(t.device) for t in self.inputs]}"
            )


def _lib():
    reason = unavailable_reason()
    if reason:
        raise CudaOpError(f"bucketrt's CUDA kernels are unavailable: {reason}")
    return _library(harness_path())


def plan(op: str, *inputs: torch.Tensor, **attrs) -> tuple[int, list[tuple[torch.dtype, tuple[int, ...]]]]:
    """Checks a call without running it: (workspace bytes, [(dtype, shape) of each output])."""
    return _plan(_lib(), _Call(op, inputs, attrs))


def _plan(lib, call: _Call):
    workspace = ctypes.c_size_t(0)
    dtypes = (ctypes.c_int * _MAX_OUTPUTS)()
    ranks = (ctypes.c_int * _MAX_OUTPUTS)()
    dims = (ctypes.c_int64 * (4 * _MAX_OUTPUTS))()
    error = lib.BucketrtCudaPlan(
        call.op,
        call.n,
        call.dtypes,
        call.ranks,
        call.dims,
        call.attrs,
        call.device.index,
        ctypes.byref(workspace),
        _MAX_OUTPUTS,
        dtypes,
        ranks,
        dims,
    )
    if error:
        raise CudaOpError(error.decode())
    from bucketrt.ops.catalogue import BY_NAME

    outputs = [
        (_OUTPUT_DTYPES[dtypes[i]], tuple(dims[4 * i + a] for a in range(ranks[i])))
        for i in range(len(BY_NAME[call.op.decode()].outputs))
    ]
    return workspace.value, outputs


def run(
    op: str, *inputs: torch.Tensor, synchronous: bool = True, workspace: torch.Tensor | None = None, **attrs
) -> tuple[torch.Tensor, ...]:
    """Runs `op` on CUDA tensors (spec order) with the given attributes on the current stream.

    synchronous=True (tests) waits for the kernels and reports errors only the data shows (e.g.
    LSHCumulation codes out of range) in this call, as the ORT glue does with
    bucketrt.cuda_sync_checks=1; False (benchmarks) returns once the kernels are enqueued
    (enqueue_report / report_error then read the data checks as the ORT glue does by default). `workspace`, when given, is a uint8 CUDA tensor of at least plan()'s bytes
    (otherwise one is taken from torch's allocator); an empty one leaves the allocation to the
    library (stream-ordered cudaMallocAsync, as a C caller would get it).
    """
    lib = _lib()
    call = _Call(op, inputs, attrs)
    workspace_bytes, specs = _plan(lib, call)
    outputs = [torch.empty(shape, dtype=dtype, device=call.device) for dtype, shape in specs]
    if workspace is None and workspace_bytes:
        workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=call.device)
    pointers = (ctypes.c_void_p * len(outputs))(*[t.data_ptr() for t in outputs])
    stream = torch.cuda.current_stream(call.device).cuda_stream
    error = lib.BucketrtCudaRun(
        call.op,
        call.n,
        call.dtypes,
        call.ranks,
        call.dims,
        call.pointers,
        len(outputs),
        pointers,
        call.attrs,
        call.device.index,
        ctypes.c_void_p(stream),
        ctypes.c_void_p(workspace.data_ptr() if workspace is not None and workspace.numel() else 0),
        workspace.numel() if workspace is not None else 0,
        int(synchronous),
    )
    if error:
        raise CudaOpError(error.decode())
    return tuple(outputs)


# The data checks without a wait, as the ORT CUDA EP drives them (plugins/cuda/ops.h): after a run
# with synchronous=False, enqueue_report copies what the checks need into pinned host memory; once
# the stream has passed it, report_error words the error on the host.


def _host_library():
    """The harness for its host-only entry points: needs the library, not a device."""
    lib = _library(harness_path())
    if lib is None:
        raise CudaOpError(f"no CUDA harness library at {harness_path()}: bucketrt was built without CUDA")
    return lib


def report_bytes(op: str, *inputs: torch.Tensor, **attrs) -> int:
    """Bytes of `op`'s data report for these inputs' dtypes and shapes (0: no data checks). Host only."""
    call = _Call(op, inputs, attrs, host_only=True)
    size = ctypes.c_size_t(0)
    error = _host_library().BucketrtCudaReportBytes(
        call.op, call.n, call.dtypes, call.ranks, call.dims, call.attrs, ctypes.byref(size)
    )
    if error:
        raise CudaOpError(error.decode())
    return size.value


def enqueue_report(op: str, *inputs: torch.Tensor, workspace: torch.Tensor | None, report: torch.Tensor, **attrs):
    """Enqueues on the current stream the copy of `op`'s data checks after a run with this
    `workspace` into `report`, a pinned uint8 CPU tensor of report_bytes(); never waits."""
    if report.numel() and not report.is_pinned():
        raise CudaOpError(f"{op}: the report must be pinned host memory (torch.empty(..., pin_memory=True))")
    lib = _lib()
    call = _Call(op, inputs, attrs)
    stream = torch.cuda.current_stream(call.device).cuda_stream
    error = lib.BucketrtCudaEnqueueReport(
        call.op,
        call.n,
        call.dtypes,
        call.ranks,
        call.dims,
        call.pointers,
        call.attrs,
        call.device.index,
        ctypes.c_void_p(stream),
        ctypes.c_void_p(workspace.data_ptr() if workspace is not None and workspace.numel() else 0),
        ctypes.c_void_p(report.data_ptr()),
    )
    if error:
        raise CudaOpError(error.decode())


def report_error(op: str, *inputs: torch.Tensor, report: bytes | torch.Tensor, **attrs) -> str:
    """The data error a landed report shows ("" if none), in the CPU kernel's words. Host only:
    `inputs` give dtypes and shapes (any device), `report` the report's bytes."""
    call = _Call(op, inputs, attrs, host_only=True)
    data = bytes(report.cpu().numpy().tobytes()) if isinstance(report, torch.Tensor) else bytes(report)
    buffer = ctypes.create_string_buffer(data, max(len(data), 1))
    error = _host_library().BucketrtCudaReportError(
        call.op, call.n, call.dtypes, call.ranks, call.dims, call.attrs, ctypes.cast(buffer, ctypes.c_void_p)
    )
    return error.decode()
