"""Triton Python-backend model for a bucketrt export, written by `bucketrt triton`.

The server's Python needs numpy and onnxruntime (or onnxruntime-gpu) only: the ONNX files, bucketrt's
op library (libbucketrt_ort.so) and decoding.py (bucketrt's greedy loop, numpy-only) sit beside this
file. Its settings are the `parameters` of config.pbtxt:

    mode                "forward" (one forward pass), "seq2seq" or "causal" (greedy generation)
    batching            "same_shape": requests of identical shapes share one ORT call (rows of these
                        models never interact); "per_request": each request runs alone
    models              JSON {component: ONNX file}
    op_library          the op library's file name, beside this file ("": the export holds no
                        bucketrt op, and its sessions run without the library)
    execution_provider  "cpu" or "cuda" (CUDA on the instance's device, CPU for what it lacks)
    intra_op_threads    ORT intra-op threads (0: ORT's default)
    max_sequence_length the longest token axis the export accepts ("" for no limit)
    sequence_axes       JSON {input: [axes]}: the token axes checked against that limit
    numpy_path          "auto", "dlpack" or "numpy": how tensors cross to and from Triton
    max_new_tokens, eos_token_id (JSON list), pad_token_id, decoder_start_token_id: generation

Batching never changes an answer: requests are never padded (YOSO and Reformer do not mask padding),
only same-shape requests are concatenated, and only for models whose rows are independent.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class RequestError(ValueError):
    """A problem with one request: answered as that request's error, the others still served."""


# -- tensors across the Python backend -------------------------------------------------------------
# Triton 2.51's Python backend corrupts numpy-2 arrays through as_numpy() and Tensor(name, ndarray)
# (stride-0 inputs, empty outputs), while its DLPack path fails with numpy 1.26 ("PyCapsule_GetPointer
# called with incorrect name"). So the path follows numpy's major version.


def numpy_major() -> int:
    return int(np.__version__.split(".")[0])


def use_dlpack(choice: str = "auto") -> bool:
    if choice in ("dlpack", "numpy"):
        return choice == "dlpack"
    return numpy_major() >= 2


def read_numpy(tensor) -> np.ndarray:
    return np.array(tensor.as_numpy(), copy=True)


def read_dlpack(tensor) -> np.ndarray:
    return np.array(np.from_dlpack(tensor), copy=True)


def write_numpy(name: str, array: np.ndarray):
    return pb_utils.Tensor(name, np.ascontiguousarray(array))


def write_dlpack(name: str, array: np.ndarray):
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array))


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


def _load_decoding(folder: Path):
    """decoding.py from beside this file, without relying on the stub's sys.path."""
    spec = importlib.util.spec_from_file_location("bucketrt_decoding", folder / "decoding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.config = config
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.params = params
        folder = Path(args.get("model_repository", "")) / str(args.get("model_version", ""))
        if not (folder / "model.py").is_file():
            folder = Path(__file__).resolve().parent
        self.folder = folder
        self.mode = params.get("mode", "forward")
        self.batching = params.get("batching", "per_request")
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.dlpack = use_dlpack(params.get("numpy_path", "auto"))
        self.read = read_dlpack if self.dlpack else read_numpy
        self.write = write_dlpack if self.dlpack else write_numpy
        limit = params.get("max_sequence_length", "")
        self.max_length = int(limit) if limit else None
        self.sequence_axes = json.loads(params.get("sequence_axes") or "{}")
        self.inputs = [
            {
                "name": i["name"],
                "dtype": np.dtype(pb_utils.triton_string_to_numpy(i["data_type"])),
                "dims": [int(d) for d in i["dims"]],
                "optional": bool(i.get("optional", False)),
            }
            for i in config["input"]
        ]
        self.output_names = [o["name"] for o in config["output"]]

        threads = int(params.get("intra_op_threads") or 0)
        op_library = params.get("op_library", "libbucketrt_ort.so")
        library = str(folder / op_library) if op_library else None
        if params.get("execution_provider") == "cuda":
            device = int(args.get("model_instance_device_id") or 0)
            providers = [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]

        def session(file: str):
            options = ort.SessionOptions()  # one per session: the library registers once per options
            if library:
                options.register_custom_ops_library(library)
            if threads:
                options.intra_op_num_threads = threads
            return ort.InferenceSession(str(folder / file), sess_options=options, providers=providers)

        self.sessions = {name: session(file) for name, file in json.loads(params["models"]).items()}
        if self.mode != "forward":
            self.decoding = _load_decoding(folder)
            self.eos = json.loads(params.get("eos_token_id") or "[]")
            pad = params.get("pad_token_id", "")
            self.pad = int(pad) if pad else None
            self.default_new_tokens = int(params.get("max_new_tokens") or 20)
            self.decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))

    # -- reading one request ------------------------------------------------------------------

    def _read_request(self, request) -> dict[str, np.ndarray]:
        feeds = {}
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec["name"])
            if tensor is None:
                if spec["optional"]:
                    continue
                raise RequestError(f"missing input '{spec['name']}'")
            array = self.read(tensor)
            if array.dtype != spec["dtype"]:
                raise RequestError(f"input '{spec['name']}' has dtype {array.dtype}, the model takes {spec['dtype']}")
            dims = ([-1] if self.batched else []) + spec["dims"]
            if array.ndim != len(dims):
                raise RequestError(
                    f"input '{spec['name']}' has {array.ndim} dimensions (shape {list(array.shape)}), "
                    f"the model takes {len(dims)}"
                )
            for axis, (got, want) in enumerate(zip(array.shape, dims)):
                if want >= 0 and got != want:
                    raise RequestError(f"input '{spec['name']}' has size {got} on axis {axis}, the model takes {want}")
            for axis in self.sequence_axes.get(spec["name"], []):
                self._check_length(spec["name"], array.shape[axis])
            feeds[spec["name"]] = array
        return feeds

    def _check_length(self, name: str, length: int, extra: str = ""):
        if length < 1:
            raise RequestError(f"input '{name}' is empty")
        if self.max_length is not None and length > self.max_length:
            raise RequestError(
                f"input '{name}' has {length} tokens{extra}; the export accepts at most {self.max_length}"
            )

    # -- execute --------------------------------------------------------------------------------

    def execute(self, requests):
        if self.mode != "forward":
            return self._generate_all(requests)
        responses = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, dict]]] = {}
        for index, request in enumerate(requests):
            try:
                feeds = self._read_request(request)
            except RequestError as e:
                responses[index] = _error(str(e))
                continue
            if self.batching == "same_shape":
                # Same names, dtypes and shapes but the batch axis: these rows can share one call.
                key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(feeds.items()))
            else:
                key = (index,)
            groups.setdefault(key, []).append((index, feeds))
        for members in groups.values():
            group = [feeds for _, feeds in members]
            try:
                outputs = self._run_group(group)
            except Exception as e:
                # One bad request (e.g. a token id beyond the vocabulary) must not fail the others.
                outputs = [self._run_alone(f) for f in group] if len(group) > 1 else [e]
            for (index, _), values in zip(members, outputs):
                if isinstance(values, Exception):
                    responses[index] = _error(f"the model failed on this request: {values}")
                else:
                    responses[index] = pb_utils.InferenceResponse(
                        output_tensors=[self.write(n, v) for n, v in zip(self.output_names, values)]
                    )
        return responses

    def _run_group(self, group: list[dict]) -> list[list[np.ndarray]]:
        """One ORT call for same-shape requests, split back per request along the batch axis."""
        session = next(iter(self.sessions.values()))
        if len(group) == 1:
            return [session.run(self.output_names, group[0])]
        rows = [next(iter(f.values())).shape[0] for f in group]
        feeds = {n: np.concatenate([f[n] for f in group], axis=0) for n in group[0]}
        together = session.run(self.output_names, feeds)
        parts = [np.split(o, np.cumsum(rows)[:-1], axis=0) for o in together]
        return [[p[k] for p in parts] for k in range(len(group))]

    def _run_alone(self, feeds: dict):
        """The request's outputs, or the exception ORT raised for it."""
        try:
            return self._run_group([feeds])[0]
        except Exception as e:
            return e

    # -- generation -----------------------------------------------------------------------------

    def _generation_inputs(self, request):
        feeds = self._read_request(request)
        ids = feeds["input_ids"]
        steps = feeds.get("max_new_tokens")
        if steps is None:
            steps = self.default_new_tokens
        else:
            values = np.unique(steps)
            if values.size != 1:
                raise RequestError("max_new_tokens must be one value for the whole request")
            steps = int(values[0])
            if steps < 0:
                raise RequestError(f"max_new_tokens must be >= 0, got {steps}")
        if ids.shape[1] < 1:
            raise RequestError("input 'input_ids' is empty")
        if self.mode == "causal":  # the generated tokens go through the model too
            self._check_length("input_ids", ids.shape[1] + steps, f" (prompt {ids.shape[1]} + max_new_tokens {steps})")
        else:
            self._check_length("input_ids", ids.shape[1])
        mask = feeds.get("attention_mask")
        if mask is not None and mask.shape != ids.shape:
            raise RequestError(f"attention_mask {list(mask.shape)} must have the shape of input_ids {list(ids.shape)}")
        return ids, mask, steps

    def _steps(self, ids, mask, steps):
        """The prefix and then each step's tokens [batch]: their concatenation is the answer."""
        if self.mode == "seq2seq":
            start = int(self.params["decoder_start_token_id"])
            yield np.full((ids.shape[0], 1), start, dtype=np.int64)
            names = ("encoder_model", "decoder_model", "decoder_with_past_model")
            tokens = self.decoding.iter_seq2seq(
                *(self.sessions[n] for n in names),
                ids,
                mask,
                decoder_start_token_id=start,
                eos_token_id=self.eos,
                pad_token_id=self.pad or 0,
                max_new_tokens=steps,
            )
        else:
            yield ids
            tokens = self.decoding.iter_causal(
                next(iter(self.sessions.values())),
                ids,
                mask,  # only a causal export with a key/value cache declares it (repository.py)
                eos_token_id=self.eos,
                pad_token_id=self.pad,
                max_new_tokens=steps,
            )
        for token in tokens:
            yield token[:, None]

    def _generate_all(self, requests):
        responses = []
        for request in requests:  # alone: a batch would decode until its longest row is done
            if self.decoupled:
                self._stream(request)
                continue
            try:
                ids, mask, steps = self._generation_inputs(request)
                answer = np.concatenate(list(self._steps(ids, mask, steps)), axis=1)
                responses.append(pb_utils.InferenceResponse(output_tensors=[self.write("output_ids", answer)]))
            except RequestError as e:
                responses.append(_error(str(e)))
            except Exception as e:
                responses.append(_error(f"the model failed on this request: {e}"))
        return None if self.decoupled else responses

    def _stream(self, request):
        """Decoupled mode: the prefix (decoder start token, or the prompt), then one response per step."""
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            ids, mask, steps = self._generation_inputs(request)
            for part in self._steps(ids, mask, steps):
                sender.send(pb_utils.InferenceResponse(output_tensors=[self.write("output_ids", part)]))
        except RequestError as e:
            sender.send(_error(str(e)), flags=final)
            return
        except Exception as e:
            sender.send(_error(f"the model failed on this request: {e}"), flags=final)
            return
        sender.send(flags=final)

    def finalize(self):
        self.sessions = {}
