"""`bucketrt serve REPO`: tritonserver over a model repository (bucketrt.serving.server), until Ctrl-C or SIGTERM."""

from __future__ import annotations

import functools
import json
import math
import signal
from pathlib import Path

import click

from .app import EXIT_FAILED, console, fail, main


class _Stop(Exception):
    """Raised in the main thread by the SIGTERM handler, so that the server is stopped like on Ctrl-C."""


def _example(server, out) -> None:
    """A curl line and a tritonclient snippet for the first model of the repository, from its metadata."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        models = [m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"]
        if not models:
            return
        metadata = client.get_model_metadata(models[0])
        batched = client.get_model_config(models[0]).get("max_batch_size", 0) > 0
    finally:
        client.close()
    name = models[0]
    # Variable dims as 4 tokens, a batch of one.
    inputs = [
        (i["name"], ([1] if batched else []) + [4 if d == -1 else d for d in i["shape"][int(batched) :]], i["datatype"])
        for i in metadata["inputs"]
        if not i.get("optional")
    ]
    # Ones are valid token ids and masks; token types are zeros (a single type is the common vocabulary).
    fill = {n: 0 if "type" in n else 1 for n, _, _ in inputs}
    body = {"inputs": [{"name": n, "shape": s, "datatype": t, "data": [fill[n]] * math.prod(s)} for n, s, t in inputs]}
    say = functools.partial(out.print, markup=False)  # the examples hold brackets
    say(f"Models ready: {', '.join(models)}")
    say("Try:")
    say(f"  curl -s http://{server.http_url}/v2/models/{name}/infer -d '{json.dumps(body, separators=(',', ':'))}'")
    say("or, in Python:")
    say("  import numpy as np, tritonclient.http as t")
    say(f"  c = t.InferenceServerClient('{server.http_url}')")
    for k, (n, s, t) in enumerate(inputs):
        say(
            f"  x{k} = t.InferInput('{n}', {s}, '{t}'); x{k}.set_data_from_numpy(np.full({s}, {fill[n]}, t.triton_to_np_dtype('{t}')))"
        )
    say(f"  print(c.infer('{name}', [{', '.join(f'x{k}' for k in range(len(inputs)))}]).get_response())")


@main.command("serve", context_settings={"ignore_unknown_options": True})
@click.argument("repository", type=click.Path(path_type=Path, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the endpoints bind to (0.0.0.0: all).")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option(
    "--tritonserver",
    "executable",
    envvar="BUCKETRT_TRITONSERVER",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The tritonserver executable [default: $BUCKETRT_TRITONSERVER, tritonserver on PATH, else the "
    "nvidia-pytriton wheel's, here or in the checkout's .triton/ (make triton-env)].",
)
@click.option(
    "--python",
    "python",
    envvar="BUCKETRT_TRITON_PYTHON",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The python3 whose environment runs the Python-backend models (numpy, onnxruntime) [default: "
    "the wheel's environment's; a container's server uses its own].",
)
@click.option(
    "--log-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where tritonserver logs [default: a temporary file, removed at exit].",
)
@click.option(
    "--startup-timeout", default=300.0, show_default=True, type=click.FloatRange(min=1), help="Seconds to be ready."
)
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED)
def serve_command(
    repository, host, http_port, grpc_port, metrics_port, executable, python, log_file, startup_timeout, server_args
):
    """Serve a Triton model repository (written by `bucketrt triton`) with tritonserver until Ctrl-C or
    SIGTERM. Arguments after the options (e.g. `-- --log-verbose=1`) go to tritonserver as they are."""
    from bucketrt.serving.server import TritonServer

    if not repository.is_dir():
        fail(
            f"model repository {repository} is not a folder; write one with `bucketrt triton EXPORT_DIR --repository {repository}`"
        )
    out = console()
    server = TritonServer(
        repository,
        host=host,
        http_port=http_port or None,
        grpc_port=grpc_port or None,
        metrics_port=metrics_port or None,
        executable=executable,
        python=python,
        args=tuple(server_args),
        log_file=log_file,
        startup_timeout=startup_timeout,
    )

    def on_sigterm(signum, frame):
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with out.status(f"Starting tritonserver on {repository} ..."):
            server.start()  # a ServerError (missing server, failed start) is one line, exit 2
        out.print(f"tritonserver {server.installation.executable}")
        out.print(f"  HTTP     http://{server.http_url}   (KServe v2: /v2/health/ready, /v2/models/NAME/infer)")
        out.print(f"  gRPC     {server.grpc_url}")
        out.print(f"  metrics  {server.metrics_url}")
        if log_file:
            out.print(f"  log      {log_file}")
        try:
            _example(server, out)
        except Exception as e:  # the examples are a courtesy: the server serves without them
            out.print(f"(no example: {type(e).__name__}: {e})", markup=False)
        out.print("Ctrl-C or SIGTERM stops it.")
        status = server.wait()
        fail(f"tritonserver stopped on its own with status {status}: {server.log_tail()}", EXIT_FAILED)
    except (KeyboardInterrupt, _Stop):
        out.print("Stopping tritonserver ...")
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    out.print("Stopped.")
