"""Makes tests/kernel_cases.py importable by the kernel tests (pytest runs in importlib mode, which
puts no test folder on sys.path). Only this folder is added: bucketrt itself still comes from the
installed package, or from PYTHONPATH=src on a machine that runs the CUDA tests from a source tree."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
