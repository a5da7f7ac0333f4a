"""Repositories written by `bucketrt triton`, served by a real tritonserver (the nvidia-pytriton wheel in
the checkout's .triton/ environments, `make triton-env`) through bucketrt.serving.TritonServer, on CPU.

One server per numpy flavour, each loading every model at once: the numpy-1 environment (the wheel's
own, tensors through as_numpy) and the numpy-2 one (tensors through DLPack). Answers over HTTP and gRPC
are compared bit for bit with bucketrt.ort_session runs of the same export (generation: token for
token with Seq2SeqGenerator / greedy_generate); then concurrent load, bad requests, and a server killed
under load and restarted. Servers bind 127.0.0.1 on free ports; each test stops only what it started.
"""

from __future__ import annotations

import http.client
import os
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from triton_exports import tiny_exports
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

import bucketrt
from bucketrt.export_format.manifest import max_sequence_length, read_manifest
from bucketrt.serving import write_repository
from bucketrt.serving.server import NUMPY1_ENV, NUMPY2_ENV, TritonServer, find_server, flavour_python

FLAVOURS = (NUMPY1_ENV, NUMPY2_ENV)
MAX_NEW_TOKENS = 6  # the generation models' default
CLIENT_TIMEOUT = 60.0  # seconds: no request may hang a test


def _python_or_skip(flavour: str):
    python = flavour_python(flavour)
    if python is None:
        reason = f"no Triton server environment .triton/{flavour} (run `make triton-env`)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + ": CI must test against the real server")
        pytest.skip(reason)
    return python


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    _python_or_skip(NUMPY1_ENV)  # no export work where no server can run
    return tiny_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def repo(exports, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    write_repository(exports["yoso"], root, max_batch_size=8)
    write_repository(exports["switch_s2s"], root, name="switch_encoder", component="encoder_model")
    write_repository(exports["reformer"], root, name="reformer", forward=True)
    write_repository(exports["reformer"], root, name="reformer_generate", max_new_tokens=MAX_NEW_TOKENS)
    write_repository(exports["switch_s2s"], root, name="switch_generate", max_new_tokens=MAX_NEW_TOKENS)
    write_repository(exports["switch_s2s"], root, name="switch_stream", max_new_tokens=MAX_NEW_TOKENS, stream=True)
    write_repository(exports["moe"], root, name="moe_generate", max_new_tokens=MAX_NEW_TOKENS)
    write_repository(exports["moe"], root, name="moe_stream", max_new_tokens=MAX_NEW_TOKENS, stream=True)
    write_repository(exports["moe_shared"], root, name="moe_shared_generate", max_new_tokens=MAX_NEW_TOKENS)
    return root


@pytest.fixture(scope="module")
def servers(repo):
    """{flavour: running TritonServer}, both started before either is waited for (they load in parallel)."""
    started = {}
    try:
        for flavour in FLAVOURS:
            started[flavour] = TritonServer(repo, python=_python_or_skip(flavour), exit_timeout=2).start(wait=False)
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def sessions(exports):
    cpu = ["CPUExecutionProvider"]
    return {
        "yoso": bucketrt.ort_session(exports["yoso"], providers=cpu),
        "reformer": bucketrt.ort_session(exports["reformer"], providers=cpu),
        "switch_encoder": bucketrt.ort_session(exports["switch_s2s"], providers=cpu, component="encoder_model"),
    }


@pytest.fixture(scope="module")
def moe_generate(exports):
    """generate(ids, mask, steps): the MoE export's PyTorch model (transformers' model with the same
    weights), greedy."""
    import torch

    from bucketrt.exporter import load_reference

    model = load_reference(exports["moe"]).model

    def generate(ids, mask, steps):
        with torch.no_grad():
            out = model.generate(
                torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=steps, do_sample=False
            )
        return out.numpy()

    return generate


def _left_padded(rng, vocab: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Three prompts of 10, 6 and 9 tokens, left-padded to 10: (input_ids, attention_mask)."""
    ids = rng.integers(3, vocab, (3, 10), dtype=np.int64)
    mask = np.ones_like(ids)
    for row, padding in ((1, 4), (2, 1)):
        ids[row, :padding], mask[row, :padding] = pad, 0
    return ids, mask


@pytest.fixture(scope="module")
def generator(exports):
    from bucketrt.runtime import Seq2SeqGenerator

    return Seq2SeqGenerator(exports["switch_s2s"], providers=["CPUExecutionProvider"])


# -- requests and their direct answers ---------------------------------------------------------


def _vocab(exports, name) -> int:
    return int(read_manifest(exports["switch_s2s" if name == "switch_encoder" else name])["config"]["vocab_size"])


def _feeds(session, ids: np.ndarray) -> dict[str, np.ndarray]:
    """ids plus the export's other inputs: masks of ones, token types of zeros."""
    feeds = {}
    for i in session.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = ids
        elif "mask" in i.name:
            feeds[i.name] = np.ones_like(ids)
        else:
            feeds[i.name] = np.zeros_like(ids)
    return feeds


def _direct(session, feeds) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def _client(protocol: str, server: TritonServer):
    if not server.running():  # say why, rather than a refused connection
        pytest.fail(f"the server is not running (exit status {server.process.returncode}): {server.log_tail()}")
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http_url, network_timeout=CLIENT_TIMEOUT)
    return grpcclient.InferenceServerClient(server.grpc_url)


def _infer(client, model: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    module = httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient
    inputs = []
    for name, value in feeds.items():
        tensor = module.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    kwargs = {"client_timeout": CLIENT_TIMEOUT} if module is grpcclient else {}
    result = client.infer(model, inputs, outputs=[module.InferRequestedOutput(n) for n in outputs], **kwargs)
    return {n: result.as_numpy(n) for n in outputs}


FORWARD = {"yoso": "yoso", "reformer": "reformer", "switch_encoder": "switch_encoder"}


# -- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_forward_models_bit_identical_to_ort(servers, sessions, exports, flavour, protocol):
    client = _client(protocol, servers[flavour])
    rng = np.random.default_rng(0)
    try:
        for model, export_name in FORWARD.items():
            session = sessions[export_name]
            vocab = _vocab(exports, export_name)
            for batch, length in ((1, 16), (2, 37), (3, 64)):
                feeds = _feeds(session, rng.integers(3, vocab, (batch, length), dtype=np.int64))
                expected = _direct(session, feeds)
                got = _infer(client, model, feeds, list(expected))
                for name, value in expected.items():
                    assert got[name].dtype == value.dtype and got[name].shape == value.shape, (model, name)
                    assert np.array_equal(got[name], value), (model, name, np.abs(got[name] - value).max())
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_generation_token_identical(servers, sessions, generator, exports, flavour, protocol):
    from bucketrt.runtime import greedy_generate

    client = _client(protocol, servers[flavour])
    rng = np.random.default_rng(1)
    reformer_eos = read_manifest(exports["reformer"])["config"].get("eos_token_id")
    try:
        for length, steps in ((9, None), (14, 9)):
            ids = rng.integers(3, 256, (1, length), dtype=np.int64)
            feeds = {"input_ids": ids}
            if steps is not None:
                feeds["max_new_tokens"] = np.full((1, 1), steps, np.int64)
            got = _infer(client, "switch_generate", feeds, ["output_ids"])["output_ids"]
            expected = generator.generate(ids, max_new_tokens=steps or MAX_NEW_TOKENS)
            assert np.array_equal(got, expected), (got.tolist(), expected.tolist())
            got = _infer(client, "reformer_generate", feeds, ["output_ids"])["output_ids"]
            expected = greedy_generate(sessions["reformer"], ids, steps or MAX_NEW_TOKENS, eos_token_id=reformer_eos)
            assert np.array_equal(got, expected), (got.tolist(), expected.tolist())
            assert got.shape[1] == length + (steps or MAX_NEW_TOKENS)
    finally:
        client.close()


@pytest.mark.parametrize("model", ["moe_generate", "moe_shared_generate"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_moe_generation_is_transformers_greedy_generate(servers, exports, moe_generate, flavour, protocol, model):
    """The mixture-of-experts causal LM with its key/value cache (growing, or one buffer past and
    present share: --shared-kv-buffer): a single prompt and a left-padded batch (attention_mask 0 at
    the padding), token for token what the PyTorch model generates."""
    client = _client(protocol, servers[flavour])
    rng = np.random.default_rng(6)
    config = read_manifest(exports["moe"])["config"]
    try:
        single = rng.integers(3, config["vocab_size"], (1, 7), dtype=np.int64)
        ids, mask = _left_padded(rng, config["vocab_size"], int(config.get("pad_token_id") or 0))
        for feeds, steps in (({"input_ids": single}, None), ({"input_ids": ids, "attention_mask": mask}, 9)):
            if steps is not None:
                feeds["max_new_tokens"] = np.full((len(feeds["input_ids"]), 1), steps, np.int64)
            got = _infer(client, model, feeds, ["output_ids"])["output_ids"]
            prompt = feeds["input_ids"]
            expected = moe_generate(prompt, feeds.get("attention_mask", np.ones_like(prompt)), steps or MAX_NEW_TOKENS)
            assert np.array_equal(got, expected), (got.tolist(), expected.tolist())
    finally:
        client.close()


def _streamed(server, model: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Triton's decoupled mode over a gRPC stream: the output_ids of every response, in order."""
    import queue

    parts: queue.Queue = queue.Queue()
    client = _client("grpc", server)
    try:
        client.start_stream(callback=lambda result, error: parts.put((result, error)))
        inputs = []
        for name, value in feeds.items():
            tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        got = []
        while True:
            result, error = parts.get(timeout=CLIENT_TIMEOUT)
            assert error is None, error
            response = result.get_response()
            if any(o.name == "output_ids" for o in response.outputs):
                got.append(result.as_numpy("output_ids"))
            if response.parameters["triton_final_response"].bool_param:
                break
        client.stop_stream()
    finally:
        client.close()
    return got


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_streamed_generation_concatenates_to_the_answer(servers, generator, exports, moe_generate, flavour):
    """One response per generated token (the first: the decoder start token, or the prompt), which
    together are the answer: Seq2SeqGenerator's for Switch, the PyTorch model's greedy generate for the
    mixture-of-experts causal LM (a left-padded batch)."""
    ids = np.random.default_rng(5).integers(3, 256, (1, 11), dtype=np.int64)
    expected = generator.generate(ids, max_new_tokens=MAX_NEW_TOKENS)
    got = _streamed(servers[flavour], "switch_stream", {"input_ids": ids})
    assert len(got) == expected.shape[1], [g.tolist() for g in got]
    assert np.array_equal(np.concatenate(got, axis=1), expected)

    config = read_manifest(exports["moe"])["config"]
    ids, mask = _left_padded(np.random.default_rng(8), config["vocab_size"], int(config.get("pad_token_id") or 0))
    expected = moe_generate(ids, mask, MAX_NEW_TOKENS)
    got = _streamed(servers[flavour], "moe_stream", {"input_ids": ids, "attention_mask": mask})
    assert len(got) == 1 + expected.shape[1] - ids.shape[1], [g.tolist() for g in got]
    assert np.array_equal(np.concatenate(got, axis=1), expected)


# -- load -------------------------------------------------------------------------------------

CLIENTS, PER_CLIENT = 8, 100


def test_concurrent_load_zero_errors_every_answer_its_own(servers, sessions, exports):
    """8 clients (half HTTP, half gRPC) send mixed-length requests at once, so that the dynamic batcher
    merges some (YOSO and Reformer batch same-shape requests; Switch runs each alone, as its batched
    expert GEMMs round differently): every answer must equal that request run alone."""
    server = servers[NUMPY1_ENV]
    rng = np.random.default_rng(2)
    pool = []  # (model, feeds, expected)
    for model in ("yoso", "reformer", "switch_encoder"):
        session = sessions[model]
        vocab = _vocab(exports, model)
        for length in (8, 8, 16, 24, 24, 40):
            feeds = _feeds(session, rng.integers(3, vocab, (1, length), dtype=np.int64))
            pool.append((model, feeds, _direct(session, feeds)))
    failures, answered = [], [0] * CLIENTS

    def client_loop(k):
        client = _client("http" if k % 2 else "grpc", server)
        order = np.random.default_rng(100 + k).integers(0, len(pool), PER_CLIENT)
        try:
            for i in order:
                model, feeds, expected = pool[i]
                got = _infer(client, model, feeds, list(expected))
                if not all(np.array_equal(got[n], v) for n, v in expected.items()):
                    failures.append(f"client {k}: {model} length {feeds['input_ids'].shape[1]} differs")
                answered[k] += 1
        except Exception as e:
            failures.append(f"client {k}: {type(e).__name__}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT * 2)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not failures, failures[:5]
    assert sum(answered) == CLIENTS * PER_CLIENT
    # The batcher did merge requests: fewer model executions than requests.
    stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics("yoso")
    entry = stats["model_stats"][0]
    assert int(entry["execution_count"]) < int(entry["inference_count"]), entry


# -- bad requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_get_errors_and_the_server_keeps_serving(servers, sessions, exports, protocol):
    server = servers[NUMPY1_ENV]
    client = _client(protocol, server)
    session = sessions["yoso"]
    ids = np.random.default_rng(3).integers(3, _vocab(exports, "yoso"), (1, 12), dtype=np.int64)
    good = _feeds(session, ids)
    longest = max_sequence_length(read_manifest(exports["yoso"]))
    bad = {
        "wrong dtype": {**good, "input_ids": ids.astype(np.float32)},
        "wrong rank": {**good, "input_ids": ids[None]},
        "too long": _feeds(session, np.ones((1, longest + 8), np.int64)),
        "missing input": {k: v for k, v in good.items() if k != "input_ids"},
        "mismatched shapes": {**good, "attention_mask": np.ones((1, 5), np.int64)},
    }
    expected = _direct(session, good)
    try:
        for what, feeds in bad.items():
            with pytest.raises(InferenceServerException) as error:
                _infer(client, "yoso", feeds, list(expected))
            assert str(error.value).strip(), what
            # ... and the next good request is still answered, right.
            got = _infer(client, "yoso", good, list(expected))
            assert all(np.array_equal(got[n], v) for n, v in expected.items()), what
        with pytest.raises(InferenceServerException):
            _infer(client, "no_such_model", good, ["x"])
        assert client.is_server_ready() and client.is_model_ready("yoso")
    finally:
        client.close()


# -- failure ----------------------------------------------------------------------------------

# What a client of a dead server may raise: Triton's error type, a refused or reset socket, or the HTTP
# client's "connection closed" (geventhttpclient's HTTPConnectionClosed is an http.client.HTTPException).
CLEAN_ERRORS = (InferenceServerException, OSError, http.client.HTTPException)


def test_killed_under_load_clients_get_clean_errors_and_a_restart_serves(servers, sessions, exports):
    """SIGKILL to the numpy-2 server (and its stubs) while 4 clients send: every request either gets
    its right answer or raises a client error (no hang, no wrong answer); restarted on the same ports,
    it answers again. Last in the module: the other tests are done with this server."""
    server = servers[NUMPY2_ENV]
    session = sessions["yoso"]
    feeds = _feeds(session, np.random.default_rng(4).integers(3, _vocab(exports, "yoso"), (1, 32), dtype=np.int64))
    expected = _direct(session, feeds)
    wrong, errors, answered = [], [], [0]
    stop = threading.Event()

    def client_loop(k):
        client = _client("http" if k % 2 else "grpc", server)
        deadline = time.monotonic() + 30  # bounded in time and count
        try:
            for _ in range(2000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    got = _infer(client, "yoso", feeds, list(expected))
                except CLEAN_ERRORS as e:
                    errors.append(type(e).__name__)
                    if len(errors) > 40:
                        return
                    time.sleep(0.05)
                    continue
                if not all(np.array_equal(got[n], v) for n, v in expected.items()):
                    wrong.append(k)
                answered[0] += 1
        except Exception as e:  # anything else is not a clean error
            wrong.append(f"{type(e).__name__}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while answered[0] < 20 and all(t.is_alive() for t in threads):
        time.sleep(0.01)
    server.kill()
    assert not server.running()
    time.sleep(1.0)  # let clients hit the dead ports
    stop.set()
    for t in threads:
        t.join(CLIENT_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a client hung on the killed server"
    assert not wrong, wrong[:5]
    assert answered[0] >= 20 and errors, (answered[0], errors[:5])

    server.restart()
    client = _client("grpc", server)
    try:
        got = _infer(client, "yoso", feeds, list(expected))
        assert all(np.array_equal(got[n], v) for n, v in expected.items())
    finally:
        client.close()


# -- finding the server -----------------------------------------------------------------------


def test_missing_server_is_one_clear_line(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from bucketrt.cli.main import main

    monkeypatch.setenv("BUCKETRT_TRITONSERVER", str(tmp_path / "nope"))
    result = CliRunner().invoke(main, ["serve", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "make triton-env" in lines[0] and "nvidia-pytriton" in lines[0], lines
    monkeypatch.delenv("BUCKETRT_TRITONSERVER")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("bucketrt.serving.server.checkout_envs", lambda: [])
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(bucketrt.exporter.BucketrtError, match="no tritonserver found.*make triton-env"):
        find_server()


ECHO_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() + 1)])
            for r in requests
        ]
"""


def test_serve_command_prints_endpoints_and_stops_on_sigterm(tmp_path):
    """`bucketrt serve` as a user runs it: ready, endpoints and an example printed, the example's curl
    body answered, then SIGTERM stops the server and its stubs, exit status 0."""
    import json
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    python = _python_or_skip(NUMPY1_ENV)
    model = tmp_path / "repo" / "echo"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(ECHO_MODEL)
    (model / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 4\n'
        'input [ { name: "x" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
    )
    command = [sys.executable, "-m", "bucketrt.cli.main", "serve", str(model.parent), "--python", str(python)]
    command += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "SIGTERM stops it" in line:
                break
        text = "".join(lines)
        assert "SIGTERM stops it" in text, text
        http = re.search(r"HTTP\s+http://(127\.0\.0\.1:\d+)", text).group(1)
        body = re.search(r"-d '(.*)'", text).group(1)
        request = urllib.request.Request(f"http://{http}/v2/models/echo/infer", data=body.encode())
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert answer["outputs"][0]["data"] == [2, 2, 2, 2], answer
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0 and "Stopped." in rest, text + rest
    with pytest.raises(OSError):  # nobody listens there any more
        urllib.request.urlopen(f"http://{http}/v2/health/ready", timeout=5)
