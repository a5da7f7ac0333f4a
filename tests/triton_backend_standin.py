"""A stand-in for Triton's `triton_python_backend_utils`, for driving model.py in-process.

It mimics the parts model.py uses (Tensor, InferenceRequest, InferenceResponse, TritonError, the
response sender of decoupled mode) and, on purpose, the Triton 2.51 Python backend's numpy pitfalls,
following SIMULATED_NUMPY_MAJOR: with numpy 2, as_numpy() returns a stride-0 view of the first element
and Tensor(name, ndarray) keeps an empty array; with numpy 1, DLPack raises like the real stub's
"PyCapsule_GetPointer called with incorrect name". A model that takes the wrong path for its numpy
therefore answers wrongly or fails here, as on the real server.
"""

from __future__ import annotations

import numpy as np

SIMULATED_NUMPY_MAJOR = int(np.__version__.split(".")[0])
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

_TYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}


def triton_string_to_numpy(name: str):
    return _TYPES[name]


class TritonError(Exception):
    def __init__(self, msg: str):
        super().__init__(msg)
        self._msg = msg

    def message(self) -> str:
        return self._msg


class Tensor:
    def __init__(self, name: str, array: np.ndarray):
        if not isinstance(array, np.ndarray):
            raise TypeError("Tensor takes a numpy array")
        self._name = name
        # Triton 2.51 with numpy 2: the output arrives empty.
        self._array = array[:0] if SIMULATED_NUMPY_MAJOR >= 2 else np.array(array)
        self.path = "numpy"

    @classmethod
    def from_dlpack(cls, name: str, obj):
        if SIMULATED_NUMPY_MAJOR < 2:
            raise TritonError("PyCapsule_GetPointer called with incorrect name")
        tensor = cls.__new__(cls)
        tensor._name, tensor._array, tensor.path = name, np.array(np.from_dlpack(obj)), "dlpack"
        return tensor

    @classmethod
    def _input(cls, name: str, array: np.ndarray):
        """A request's input, as the server would have deserialised it (no simulated damage)."""
        tensor = cls.__new__(cls)
        tensor._name, tensor._array, tensor.path = name, np.array(array), "input"
        return tensor

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if SIMULATED_NUMPY_MAJOR >= 2 and self._array.size:  # Triton 2.51 with numpy 2: stride-0 view
            return np.lib.stride_tricks.as_strided(self._array, self._array.shape, (0,) * self._array.ndim)
        return self._array

    def __dlpack__(self, *args, **kwargs):
        if SIMULATED_NUMPY_MAJOR < 2:
            raise TritonError("PyCapsule_GetPointer called with incorrect name")
        return self._array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    def result(self) -> np.ndarray:
        """What the client would receive."""
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors=None, error=None):
        self._tensors = list(output_tensors or [])
        self._error = error

    def output_tensors(self):
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self):
        return self._error


class ResponseSender:
    def __init__(self):
        self.responses: list[InferenceResponse] = []
        self.closed = False

    def send(self, response=None, flags: int = 0):
        if self.closed:
            raise TritonError("the response sender is closed")
        if response is not None:
            self.responses.append(response)
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.closed = True


class InferenceRequest:
    def __init__(self, **inputs: np.ndarray):
        self._inputs = [Tensor._input(name, array) for name, array in inputs.items()]
        self.sender = ResponseSender()

    def inputs(self):
        return self._inputs

    def get_response_sender(self):
        return self.sender


def get_input_tensor_by_name(request: InferenceRequest, name: str):
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str):
    return next((t for t in response.output_tensors() if t.name() == name), None)
