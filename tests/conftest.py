"""Makes tests/op_inputs.py and tests/kernel_cases.py importable by the tests (pytest runs in
importlib mode, which puts no test folder on sys.path). Only this folder is added: bucketrt itself
still comes from the installed package, or from PYTHONPATH=src on a machine that runs the CUDA tests
from a source tree.

Also `cli_export`: exports that several test files need, made once per test run."""

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)


@pytest.fixture(scope="session")
def cli_export(tmp_path_factory):
    """cli_export(*ARGS) -> a folder holding `bucketrt export ARGS OUT`'s output, the caller's own.

    The export runs once per test run (through the CLI, which must exit 0) and each call gets a
    fresh copy of it, so a test file may write into its folder as before. Under pytest-xdist the
    workers share the one export: its folder sits beside their base temporary folders, and a file
    lock makes the first to need it export it while the others wait.
    """
    from click.testing import CliRunner
    from filelock import FileLock

    from bucketrt.cli.main import main

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-exports"
    shared.mkdir(exist_ok=True)

    def get(*args) -> Path:
        args = [str(a) for a in args]
        key = hashlib.sha256("\0".join(args).encode()).hexdigest()[:16]
        made = shared / key
        with FileLock(str(shared / f"{key}.lock")):
            if not (made / ".done").exists():
                shutil.rmtree(made, ignore_errors=True)
                result = CliRunner().invoke(main, ["export", *args, str(made)])
                assert result.exit_code == 0, result.output
                (made / ".done").write_text(" ".join(args))
        copy = tmp_path_factory.mktemp("export") / "model"
        shutil.copytree(made, copy, ignore=shutil.ignore_patterns(".done"))
        return copy

    return get
