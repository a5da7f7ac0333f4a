"""Runs NVIDIA Triton Inference Server over a model repository (`bucketrt serve`, the tests, the benchmark).

`TritonServer` is a context manager: it finds a `tritonserver`, starts it on the ports asked for (free
ones on 127.0.0.1 by default), waits until it is ready (tritonclient's health API), and stops it on
exit, killing its whole process group so that no Python-backend stub outlives it.

Where the server comes from, first found wins:
  1. `$BUCKETRT_TRITONSERVER` (a `tritonserver` executable), or the `executable` argument;
  2. `tritonserver` on PATH (a Triton container puts it there, with its backends in
     /opt/tritonserver/backends, the server's own default);
  3. the nvidia-pytriton wheel, which bundles tritonserver and its Python backend: in this
     interpreter's environment, or in the checkout's `.triton/` environments (`make triton-env`).

The wheel's server needs three things a container does for it, each measured on this project's
machines: a backend folder where `libtriton_python.so` and the stub built for the models' Python
version (the wheel keeps one per version in python_backend_stubs/<X.Y>/) sit side by side — symlinks
to the wheel's files, so that their $ORIGIN rpaths still find the wheel's bundled libraries; that
Python first on PATH, because the stub runs the first `python3` it finds there; and that Python's
own libpython first on LD_LIBRARY_PATH, or the stub may bind another libpython of the same version
(the system's) than the interpreter whose packages it imports.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bucketrt.errors import ServerError

SERVER_ENV = "BUCKETRT_TRITONSERVER"
PYTHON_ENV = "BUCKETRT_TRITON_PYTHON"
# The checkout's server environments (`make triton-env`): numpy 1 with the wheel, numpy 2 beside it.
TRITON_ENV_DIR = ".triton"
NUMPY1_ENV, NUMPY2_ENV = "numpy1", "numpy2"

HOW_TO_GET_ONE = (
    "run `make triton-env` in a bucketrt checkout, `pip install nvidia-pytriton` (it bundles tritonserver "
    f"and its Python backend), run inside a Triton container (nvcr.io/nvidia/tritonserver), or set {SERVER_ENV} "
    "to a tritonserver executable"
)


@dataclass
class Installation:
    """A tritonserver and what it needs to run Python-backend models."""

    executable: Path
    # The nvidia-pytriton wheel's tritonserver/ folder when the server is the wheel's, else None
    # (a container's or a source build's server has its backends where it expects them).
    wheel: Path | None = None
    # The python3 whose environment runs the models (numpy, onnxruntime), or None for the server's own.
    python: Path | None = None

    def stub(self, version: str) -> Path | None:
        if self.wheel is None:
            return None
        path = self.wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
        return path if path.is_file() else None


def _wheel_server(package_dir: Path) -> Path | None:
    exe = package_dir / "tritonserver" / "bin" / "tritonserver"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


def _env_python(site_packages: Path) -> Path | None:
    """bin/python3 of the environment holding `site_packages` (ENV/lib/pythonX.Y/site-packages)."""
    python = site_packages.parent.parent.parent / "bin" / "python3"
    return python if python.exists() else None


def checkout_envs() -> list[Path]:
    """Where `make triton-env` puts the server environments: beside the checkout's .venv (this
    interpreter's environment) or under the current folder."""
    roots = [Path(sys.prefix).parent / TRITON_ENV_DIR, Path.cwd() / TRITON_ENV_DIR]
    seen: list[Path] = []
    for root in roots:
        if root.resolve() not in seen and root.is_dir():
            seen.append(root.resolve())
    return seen


def flavour_python(flavour: str) -> Path | None:
    """python3 of a checkout server environment: "numpy1" (with the wheel) or "numpy2"."""
    for root in checkout_envs():
        python = root / flavour / "bin" / "python3"
        if python.exists():
            return python
    return None


def _wheel_in(python: Path) -> Path | None:
    """The pytriton package folder in the environment of `python`, if the wheel is installed there."""
    for lib in sorted((python.parent.parent / "lib").glob("python3*/site-packages/pytriton")):
        if _wheel_server(lib):
            return lib
    return None


def find_server(executable=None, python=None) -> Installation:
    """The tritonserver to run (see the module's docstring for the order), or ServerError saying how
    to get one. `python` is the python3 whose environment runs the models; by default
    $BUCKETRT_TRITON_PYTHON, else the wheel's own environment's."""
    python = python or os.environ.get(PYTHON_ENV)
    python = Path(python) if python else None
    if python is not None and not python.exists():
        raise ServerError(f"the models' Python {python} does not exist")
    explicit = executable or os.environ.get(SERVER_ENV)
    if explicit:
        exe = Path(explicit)
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            where = "" if executable else f" ({SERVER_ENV})"
            raise ServerError(f"tritonserver {exe}{where} is not an executable file", HOW_TO_GET_ONE)
        return Installation(exe.resolve(), _wheel_of(exe.resolve()), python)
    on_path = shutil.which("tritonserver")
    if on_path:
        exe = Path(on_path).resolve()
        return Installation(exe, _wheel_of(exe), python)
    spec = importlib.util.find_spec("pytriton")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
        exe = _wheel_server(package)
        if exe:
            return Installation(exe, package / "tritonserver", python or _env_python(package.parent))
    numpy1 = flavour_python(NUMPY1_ENV)
    if numpy1 is not None:
        package = _wheel_in(numpy1)
        if package is not None:
            return Installation(_wheel_server(package), package / "tritonserver", python or numpy1)
    raise ServerError("no tritonserver found", HOW_TO_GET_ONE)


def _wheel_of(exe: Path) -> Path | None:
    """The wheel's tritonserver/ folder when `exe` is the wheel's bin/tritonserver."""
    folder = exe.parent.parent
    return folder if (folder / "python_backend_stubs").is_dir() else None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the kernel's pick). Another process may take it before the
    server binds it; the server then fails to start and says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _python_facts(python: Path) -> dict:
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
            "'libdir': sysconfig.get_config_var('LIBDIR') or '', 'prefix': sys.prefix}))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise ServerError(f"the models' Python {python} does not run: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def _set_parent_death_signal() -> None:
    """In the child before exec: SIGTERM when the process that started the server dies, so that a
    killed test run or CLI leaves no server behind (Linux only; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class TritonServer:
    """tritonserver over `repository`, as a context manager:

        with TritonServer("out/repo") as server:
            client = tritonclient.http.InferenceServerClient(server.http_url)

    Ports left None are free ports picked at start. `python` is the python3 whose environment runs the
    Python-backend models (see find_server). `args` are passed to tritonserver as they are. The
    server's log goes to `log_file` (a file in the server's temporary folder by default).
    """

    repository: str | os.PathLike
    host: str = "127.0.0.1"
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    executable: str | os.PathLike | None = None
    python: str | os.PathLike | None = None
    args: tuple[str, ...] = ()
    log_file: str | os.PathLike | None = None
    startup_timeout: float = 180.0
    # Seconds tritonserver waits for requests in flight at stop before it unloads the models.
    exit_timeout: int = 5
    installation: Installation | None = field(default=None, init=False)
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    # The log being written: log_file, or one in the temporary folder (removed at stop).
    log: Path | None = field(default=None, init=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _facts: dict | None = field(default=None, init=False, repr=False)

    # -- endpoints ---------------------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        # A server bound to every interface is reached on the loopback.
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment the server runs with (set up the backend folder first:
        start() does)."""
        inst = self.installation
        cmd = [
            str(inst.executable),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={self.exit_timeout}",
            # CPU machines: no GPU metrics, and no pinned host memory to ask CUDA for.
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
        ]
        env = dict(os.environ)
        if self._workdir is not None and (self._workdir / "backends").is_dir():
            cmd.append(f"--backend-directory={self._workdir / 'backends'}")
        if inst.python is not None:
            facts = self._facts
            # The stub runs the first python3 on PATH, and binds the first libpython of its version on
            # the library path: both must be the models' Python.
            env["PATH"] = os.pathsep.join([str(inst.python.parent), env.get("PATH", "")])
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [facts["libdir"], env.get("LD_LIBRARY_PATH", "")] if p)
            # A venv's python3 is found through PATH; PYTHONHOME or PYTHONPATH of the caller's would
            # point the stub at another environment's packages.
            env.pop("PYTHONHOME", None)
            env.pop("PYTHONPATH", None)
        return cmd + list(self.args), env

    def start(self, wait: bool = True) -> TritonServer:
        """Starts the server and, unless `wait` is false, waits until it is ready (wait_ready).

        Call it from a thread that outlives the server (the main thread): Linux sends the parent-death
        signal when the thread that started the server ends."""
        if self.process is not None:
            raise RuntimeError("this server is already started")
        repository = Path(self.repository)
        if not repository.is_dir():
            raise ServerError(f"model repository {repository} is not a folder")
        self.installation = find_server(self.executable, self.python)
        self._workdir = Path(tempfile.mkdtemp(prefix="bucketrt-triton-"))
        try:
            self._prepare_backends()
            for name in ("http_port", "grpc_port", "metrics_port"):
                if getattr(self, name) is None:
                    setattr(self, name, free_port(self._client_host.strip("[]")))
            cmd, env = self.command()
            self.log = Path(self.log_file) if self.log_file else self._workdir / "tritonserver.log"
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    cmd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own process group: stop() signals the server and every stub it started.
                    start_new_session=True,
                    preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,
                )
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_backends(self) -> None:
        """For the wheel's server: backends/python/ with its backend library, utils module and the
        stub for the models' Python version, as symlinks into the wheel."""
        inst = self.installation
        self._facts = _python_facts(inst.python) if inst.python is not None else None
        if inst.wheel is None:
            return
        if inst.python is None:
            raise ServerError(
                f"the nvidia-pytriton server {inst.executable} needs the Python that runs the models",
                f"pass --python or set {PYTHON_ENV} to a python3 with numpy and onnxruntime",
            )
        version = self._facts["version"]
        stub = inst.stub(version)
        if stub is None:
            have = sorted(p.name for p in (inst.wheel / "python_backend_stubs").iterdir())
            raise ServerError(
                f"nvidia-pytriton has no Python backend stub for Python {version} (it has {', '.join(have)})",
                "use a Python of one of those versions for the models",
            )
        python_backend = self._workdir / "backends" / "python"
        python_backend.mkdir(parents=True)
        for source in [*sorted((inst.wheel / "backends" / "python").glob("*.*")), stub]:
            if source.suffix in (".so", ".py") or source == stub:
                (python_backend / source.name).symlink_to(source)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Returns once the server reports ready (every model of the repository loaded); ServerError
        with the log's last lines if it exits first or takes longer than `timeout`."""
        import tritonclient.http as httpclient

        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        try:
            self._poll_ready(httpclient, deadline, timeout)
        except BaseException:
            self.stop()
            raise

    def _poll_ready(self, httpclient, deadline, timeout) -> None:
        client = httpclient.InferenceServerClient(self.http_url, connection_timeout=2.0, network_timeout=2.0)
        try:
            while True:
                if self.process.poll() is not None:
                    raise ServerError(
                        f"tritonserver exited with status {self.process.returncode} while starting: {self.log_tail()}"
                    )
                with contextlib.suppress(Exception):  # not listening yet
                    if client.is_server_ready():
                        return
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"tritonserver was not ready after {timeout or self.startup_timeout:.0f} s: {self.log_tail()}"
                    )
                time.sleep(0.1)
        finally:
            client.close()

    def log_tail(self, lines: int = 8) -> str:
        """The log's error lines (Triton starts them with E), else its last lines, for a one-line message."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except (OSError, AttributeError):
            return "(no log)"
        errors = [line for line in text if line.startswith("E") or "rror" in line]
        picked = (errors or text)[-lines:]
        where = f" (log: {self.log})" if self.log_file else ""
        return " | ".join(line.strip() for line in picked) + where

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Waits for the server to exit on its own; its status, or None after `timeout`."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _signal_group(self, sig) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the server and its stubs at once: a crash, for failure tests."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM (Triton's clean shutdown: it lets requests in flight finish for exit_timeout
        seconds, unloads the models and ends their stubs), SIGKILL to the process group after that,
        then the temporary backend folder is removed. Safe to call more than once."""
        if self.process is not None:
            if self.process.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.process.wait(self.exit_timeout + 15)
                except subprocess.TimeoutExpired:
                    pass
            # Stubs still alive in the group (a killed server leaves them briefly) go too.
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def restart(self) -> TritonServer:
        """Stops (or reaps a killed) server and starts it again on the same ports."""
        self.stop()
        self.process = None
        return self.start()
